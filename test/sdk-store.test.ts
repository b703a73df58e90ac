import t, { type Test } from 'tap'
import { AtlasClient, TaskStore, type MutationOutcome, type Task, type TaskEvent, type GetToken } from '../client/index.js'
import { api, startInstance, tokenFor, type Instance } from './helpers/app.js'
import { controlledWebSocket, nextEvent, until, type SocketControl } from './helpers/sdk.js'

interface Setup {
  instance: Instance
  client: AtlasClient
  store: TaskStore
  control: SocketControl
  events: TaskEvent[]
  /** Idempotency-Key of every mutation the SDK sent, in order. */
  sentKeys: string[]
  /** Makes the SDK's next HTTP call fail without reaching the server. */
  failNextCall (): void
  bob: string
  alice: string
}

async function setup (t: Test, options: { getToken?: GetToken, newMutationId?: () => string } = {}): Promise<Setup> {
  const dir = t.testdir()
  const instance = await startInstance(t, { databasePath: `${dir}/atlas.db` })
  const [alice, bob] = await Promise.all([tokenFor('alice', ['red']), tokenFor('bob', ['red'])])
  const sentKeys: string[] = []
  let failNext = false
  const fetchSpy: typeof fetch = async (input, init) => {
    const key = (init?.headers as Record<string, string> | undefined)?.['idempotency-key']
    if (key !== undefined) sentKeys.push(key)
    if (failNext) {
      failNext = false
      throw new TypeError('fetch failed')
    }
    return await fetch(input, init)
  }
  const control = controlledWebSocket()
  const client = new AtlasClient({ baseUrl: instance.baseUrl, ...(options.getToken !== undefined ? { getToken: options.getToken } : { token: alice }), WebSocket: control.WebSocket, fetch: fetchSpy })
  t.teardown(() => client.close())
  const events: TaskEvent[] = []
  client.on('event', (e) => events.push(e))
  const store = new TaskStore(client, 'red', { newMutationId: options.newMutationId })
  t.teardown(() => store.close())
  client.connect()
  await store.start()
  return { instance, client, store, control, events, sentKeys, failNextCall: () => { failNext = true }, bob, alice }
}

/** A task created over HTTP by bob, and the store having heard of it. */
async function seedTask (s: Setup, title: string): Promise<Task> {
  const response = await api(s.instance.baseUrl, 'POST', '/teams/red/tasks', { token: s.bob, body: { title, description: 'seeded' } })
  const task = response.body as Task
  await storeShows(s, `${title} in the store`, () => s.store.get(task.id)?.version === task.version)
  return task
}

async function storeShows (s: Setup, what: string, check: () => boolean): Promise<void> {
  await until(what, s.store, ['change'], check)
}

async function serverTasks (s: Setup): Promise<Task[]> {
  return (await api(s.instance.baseUrl, 'GET', '/teams/red/tasks', { token: s.alice })).body.tasks
}

t.test('the store follows events from other users', async (t) => {
  const s = await setup(t)
  t.same(s.store.tasks, [], 'an empty team starts empty')
  const task = await seedTask(s, 'from bob')
  const patched = await api(s.instance.baseUrl, 'PATCH', `/teams/red/tasks/${task.id}`, { token: s.bob, body: { status: 'done' } })
  t.equal(patched.status, 200)
  await storeShows(s, 'the move', () => s.store.get(task.id)?.status === 'done')
  await seedTask(s, 'second')
  const removed = await api(s.instance.baseUrl, 'DELETE', `/teams/red/tasks/${task.id}`, { token: s.bob })
  t.equal(removed.status, 204)
  await storeShows(s, 'the delete', () => s.store.get(task.id) === undefined)
  t.same(s.store.tasks, await serverTasks(s), 'the store equals the server\'s list')
  t.equal(s.store.seq, 4)
})

t.test('an optimistic create shows at once and is confirmed by the event carrying its mutation id', async (t) => {
  const s = await setup(t)
  const order: string[] = []
  s.store.on('applied', ({ event }) => order.push(`event ${event.mutationId ?? ''}`))
  s.store.on('confirmed', (o) => order.push(`confirmed ${o.mutationId}`))
  const outcome = s.store.create({ title: 'mine' })
  // Before any I/O completed:
  const shown = s.store.tasks.find((task) => task.title === 'mine')
  t.ok(shown, 'the new task is visible immediately')
  t.match(shown?.id, /^local:/, 'under a temporary id')
  t.equal(shown?.version, 0)
  t.ok(s.store.isPending(shown?.id ?? ''), 'marked pending')
  const result = await outcome
  t.ok(result.ok, 'confirmed')
  t.equal(s.sentKeys.at(-1), result.mutationId, 'the mutation id went out as Idempotency-Key')
  const event = s.events.find((e) => e.mutationId === result.mutationId)
  t.equal(event?.type, 'task.created', 'the server\'s event carries the same mutation id')
  t.same(order, [`event ${result.mutationId}`, `confirmed ${result.mutationId}`], 'confirmation followed the event')
  t.equal(s.store.tasks.filter((task) => task.title === 'mine').length, 1, 'the placeholder gave way to the real task')
  t.equal(result.task?.id, event?.taskId)
  t.equal(s.store.pendingCount, 0)
  t.same(s.store.tasks, await serverTasks(s))
})

t.test('updates confirm by event; a no-op update is confirmed by the HTTP answer; quick successive edits do not trip over each other', async (t) => {
  const s = await setup(t)
  const task = await seedTask(s, 'draft')
  const first = s.store.update(task.id, { title: 'final' })
  t.equal(s.store.get(task.id)?.title, 'final', 'shown at once')
  const confirmed = await first
  t.ok(confirmed.ok)
  t.ok(s.events.some((e) => e.mutationId === confirmed.mutationId && e.type === 'task.updated'))
  t.equal(s.store.get(task.id)?.version, 2)

  // Same title again: the server changes nothing and sends no event; the answer says so.
  const eventsBefore = s.events.length
  const noop = await s.store.update(task.id, { title: 'final' })
  t.ok(noop.ok, 'confirmed although no event will ever come')
  t.equal(s.events.length, eventsBefore, 'no event was produced')

  // Three moves fired at once, each with If-Match: chained, each based on the previous one's version.
  const moves = await Promise.all([
    s.store.update(task.id, { status: 'in_progress' }),
    s.store.update(task.id, { status: 'done' }),
    s.store.update(task.id, { description: 'shipped' })
  ])
  t.same(moves.map((m) => m.ok), [true, true, true])
  t.same(s.store.tasks, await serverTasks(s))
  t.equal(s.store.get(task.id)?.version, 5)
})

t.test('a stale edit refused with 412 is rolled back to the server\'s current task', async (t) => {
  const s = await setup(t)
  const task = await seedTask(s, 'original')
  // The store stops hearing the server, then bob changes the task behind its back.
  s.control.deafen()
  const bobs = await api(s.instance.baseUrl, 'PATCH', `/teams/red/tasks/${task.id}`, { token: s.bob, body: { title: 'bob was here' } })
  t.equal(bobs.status, 200)
  t.equal(s.store.get(task.id)?.title, 'original', 'the store has not heard of it')

  const rolledBack: MutationOutcome[] = []
  s.store.on('rolledBack', (o) => rolledBack.push(o))
  const pending = s.store.update(task.id, { title: 'alice was here' })
  t.equal(s.store.get(task.id)?.title, 'alice was here', 'the edit shows at once')
  const outcome = await pending
  t.notOk(outcome.ok)
  if (outcome.ok) return
  t.equal(outcome.error.status, 412)
  t.match(outcome.reason, /someone else changed/)
  t.equal(rolledBack.length, 1)
  const now = s.store.get(task.id)
  t.equal(now?.title, 'bob was here', 'rolled back to the server\'s version, not to the stale one')
  t.equal(now?.version, 2)
  t.same(outcome.task, now)
  t.equal(s.store.pendingCount, 0)
})

t.test('without a conflict listener, refusals roll back: 403 (membership lost), 400 (invalid), 404 (a delete), 409 (mutation id reused); a request that never arrived is retried', async (t) => {
  const redToken = await tokenFor('alice', ['red'])
  const blueToken = await tokenFor('alice', ['blue'])
  let token = redToken
  let fixedId: string | undefined
  const s = await setup(t, { getToken: () => token, newMutationId: () => fixedId ?? `m-${Math.random().toString(36).slice(2)}` })
  const task = await seedTask(s, 'steady')
  const before = s.store.get(task.id)

  const check = async (name: string, run: () => Promise<MutationOutcome>, status: number, shownAtOnce: () => boolean): Promise<void> => {
    const pending = run()
    t.ok(shownAtOnce(), `${name}: shown at once`)
    const outcome = await pending
    t.notOk(outcome.ok, `${name}: rolled back`)
    if (!outcome.ok) t.equal(outcome.error.status, status, `${name}: status ${status}`)
    t.same(s.store.get(task.id), before, `${name}: the task is as it was`)
    t.equal(s.store.tasks.length, 1, `${name}: no placeholder left`)
    t.equal(s.store.pendingCount, 0)
  }

  token = blueToken
  await check('update, 403', async () => await s.store.update(task.id, { title: 'nope' }), 403, () => s.store.get(task.id)?.title === 'nope')
  await check('create, 403', async () => await s.store.create({ title: 'nope' }), 403, () => s.store.tasks.length === 2)
  token = redToken

  await check('update, 400', async () => await s.store.update(task.id, { title: 'x'.repeat(201) }), 400, () => s.store.get(task.id)?.title.length === 201)
  await check('create, 400', async () => await s.store.create({ title: '' }), 400, () => s.store.tasks.length === 2)
  await check('delete, 404 after bob deleted it', async () => {
    // Seen as an error about another task: a delete of a missing task never touches ours.
    const ghost = await seedTask(s, 'ghost')
    s.control.deafen()
    await api(s.instance.baseUrl, 'DELETE', `/teams/red/tasks/${ghost.id}`, { token: s.bob })
    const outcome = await s.store.remove(ghost.id)
    t.equal(s.store.get(ghost.id), undefined, 'the vanished task is gone from the store too')
    return outcome
  }, 404, () => true)
  // The deaf socket is dropped so the client reconnects and hears the server again.
  const back = nextEvent(s.client, 'state', (state) => state === 'open')
  for (const ws of s.instance.app.websocketServer.clients) ws.terminate()
  await back

  fixedId = 'reused-id'
  const first = await s.store.update(task.id, { description: 'first use of the id' })
  t.ok(first.ok)
  const firstState = s.store.get(task.id)
  const reused = await s.store.update(task.id, { description: 'second use of the id' })
  t.notOk(reused.ok)
  if (!reused.ok) t.equal(reused.error.status, 409)
  t.same(s.store.get(task.id), firstState, '409: back to the state the first use produced')
  fixedId = undefined

  // A request that never arrived is not a refusal: it is sent again, with the same key (test/sdk-offline.test.ts).
  s.failNextCall()
  const keysBefore = s.sentKeys.length
  const lost = await s.store.update(task.id, { title: 'lost, then sent again' })
  t.ok(lost.ok, 'network failure: retried, not rolled back')
  t.same(s.sentKeys.slice(keysBefore), [lost.mutationId, lost.mutationId], 'twice, with the same Idempotency-Key')
  t.equal(s.store.get(task.id)?.title, 'lost, then sent again')
  t.same(s.store.tasks, await serverTasks(s), 'the store agrees with the server')
})
