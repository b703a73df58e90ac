import t, { type Test } from 'tap'
import { AtlasClient, MemoryStorage, TaskStore, type AtlasClientEvents, type GetToken, type MutationOutcome, type Task, type TaskConflict, type TaskEvent, type TaskStoreEvents } from '../client/index.js'
import { api, connectClient, startInstance, tokenFor, type Instance } from './helpers/app.js'
import { controlledWebSocket, nextEvent, until, type SocketControl } from './helpers/sdk.js'

// Offline-first edits of the SDK's TaskStore against a real server: the queue, its persistence,
// retries with the same Idempotency-Key, and conflicts (docs/client-sdk.md, "Offline edits").

const RETRY = { baseMs: 20, capMs: 200 }
const KEY = 'atlas-realtime:queue:alice:red'

/** One request the SDK made, as the network saw it. */
interface Sent { method: string, key: string | undefined, ifMatch: string | undefined, status: number | 'no answer', replayed: boolean }

/** The network between the SDK and the server, with switches. */
interface Net {
  fetch: typeof fetch
  /** Every request fails without reaching the server while true. */
  offline: boolean
  /** Requests with these keys reach the server (which commits them), but their answer is lost, once. */
  loseAnswer: Set<string>
  readonly sent: Sent[]
}

function network (): Net {
  const net: Net = {
    offline: false,
    loseAnswer: new Set(),
    sent: [],
    fetch: async (input, init) => {
      const headers = (init?.headers ?? {}) as Record<string, string>
      const entry: Sent = { method: init?.method ?? 'GET', key: headers['idempotency-key'], ifMatch: headers['if-match'], status: 'no answer', replayed: false }
      net.sent.push(entry)
      if (net.offline) throw new TypeError('fetch failed')
      const response = await fetch(input, init)
      if (entry.key !== undefined && net.loseAnswer.delete(entry.key)) {
        // The server committed it; the answer never arrives.
        await response.arrayBuffer()
        entry.status = 'no answer'
        throw new TypeError('fetch failed: other side closed')
      }
      entry.status = response.status
      entry.replayed = response.headers.get('idempotency-replayed') === 'true'
      return response
    }
  }
  return net
}

interface Setup {
  instance: Instance
  client: AtlasClient
  store: TaskStore
  control: SocketControl
  net: Net
  storage: MemoryStorage
  alice: string
  bob: string
}

async function setup (t: Test, options: { instance?: Instance, storage?: MemoryStorage, getToken?: GetToken } = {}): Promise<Setup> {
  const instance = options.instance ?? await startInstance(t, { databasePath: `${t.testdir()}/atlas.db` })
  const [alice, bob] = await Promise.all([tokenFor('alice', ['red']), tokenFor('bob', ['red'])])
  const net = network()
  const control = controlledWebSocket()
  const storage = options.storage ?? new MemoryStorage()
  const client = new AtlasClient({
    baseUrl: instance.baseUrl,
    ...(options.getToken !== undefined ? { getToken: options.getToken } : { token: alice }),
    WebSocket: control.WebSocket,
    fetch: net.fetch,
    reconnect: { baseMs: 20, capMs: 200 }
  })
  t.teardown(() => client.close())
  const store = new TaskStore(client, 'red', { persist: { storage }, retry: RETRY })
  t.teardown(() => store.close())
  client.connect()
  await store.start()
  return { instance, client, store, control, net, storage, alice, bob }
}

async function seedTask (s: Setup, title: string): Promise<Task> {
  const task = (await api(s.instance.baseUrl, 'POST', '/teams/red/tasks', { token: s.bob, body: { title } })).body as Task
  await until(`${title} in the store`, s.store, ['change'], () => s.store.get(task.id)?.version === task.version)
  return task
}

/** The server is unreachable: HTTP fails, sockets drop and cannot come back. */
async function goOffline (s: Setup): Promise<void> {
  s.net.offline = true
  s.control.blocked = true
  const away = nextEvent(s.client, 'state', (state) => state === 'reconnecting')
  for (const ws of s.instance.app.websocketServer.clients) ws.terminate()
  await away
}

async function goOnline (s: Setup): Promise<void> {
  s.net.offline = false
  s.control.blocked = false
  if (s.client.state !== 'open') await nextEvent(s.client, 'state', (state) => state === 'open')
}

/** A new socket for a deafened client (it resumes from its last seq and hears again). */
async function reconnect (s: Setup): Promise<void> {
  const back = nextEvent<AtlasClientEvents['state']>(s.client, 'state', (state) => state === 'open')
  for (const ws of s.instance.app.websocketServer.clients) ws.terminate()
  await back
}

/** The team's event log, read back from the server: every event since seq 0. */
async function eventLog (t: Test, instance: Instance): Promise<TaskEvent[]> {
  const reader = await connectClient(t, instance, await tokenFor('dave', ['red']), { teams: ['red'], since: { red: 0 } })
  const events = [...reader.events] as TaskEvent[]
  await reader.close()
  return events
}

async function serverTask (s: Setup, id: string): Promise<{ status: number, body: Task }> {
  return await api(s.instance.baseUrl, 'GET', `/teams/red/tasks/${id}`, { token: s.bob })
}

function stored (storage: MemoryStorage): Array<Record<string, unknown>> {
  const text = storage.getItem(KEY)
  return text === null ? [] : JSON.parse(text).mutations
}

t.test('an edit made while the server is unreachable stays applied, is persisted, and lands exactly once when it is back; a restart keeps what was still queued', async (t) => {
  const s = await setup(t)
  const task = await seedTask(s, 'Trip')
  await goOffline(s)
  const retrying: Array<TaskStoreEvents['retrying']> = []
  s.store.on('retrying', (r) => retrying.push(r))
  const rolledBack: MutationOutcome[] = []
  s.store.on('rolledBack', (o) => rolledBack.push(o))

  const moved = s.store.update(task.id, { status: 'done' })
  t.equal(s.store.get(task.id)?.status, 'done', 'shown at once')
  await until('three failed attempts', s.store, ['retrying'], () => retrying.length >= 3)
  t.equal(s.store.get(task.id)?.status, 'done', 'still applied after failed attempts')
  t.ok(s.store.isUnsent(task.id), 'marked as not sent yet')
  t.same(rolledBack, [], 'nothing rolled back')
  t.match(retrying[0], { kind: 'update', taskId: task.id, attempt: 1, error: { status: 0 } })
  const queued = stored(s.storage)
  t.equal(queued.length, 1, 'persisted')
  t.match(queued[0], { kind: 'update', taskId: task.id, patch: { status: 'done' }, ifMatch: 1, useIfMatch: true })
  const key = queued[0].mutationId as string

  await goOnline(s)
  const outcome = await moved
  t.match(outcome, { ok: true, mutationId: key, kind: 'update' }, 'landed once the server was back')
  const attempts = s.net.sent.filter((r) => r.method === 'PATCH')
  t.ok(attempts.length >= 4, 'tried again and again')
  t.ok(attempts.every((r) => r.key === key && r.ifMatch === '"1"'), 'always with the same Idempotency-Key and If-Match')
  t.match((await serverTask(s, task.id)).body, { status: 'done', version: 2 }, 'applied once: version 2')
  t.same(stored(s.storage), [], 'the persisted queue is empty again')

  // Offline again, two more edits; then the app stops before the server is back.
  await goOffline(s)
  const created = s.store.create({ title: 'Written on the train' })
  const renamed = s.store.update(task.id, { title: 'Trip (offline)' })
  await until('a failed attempt', s.store, ['retrying'], () => retrying.length >= 5)
  t.equal(stored(s.storage).length, 2, 'both persisted, in the order they were made')
  s.store.close()
  s.client.close()
  const [c, r] = await Promise.all([created, renamed])
  t.match([c, r], [{ ok: false, queued: true, kind: 'create' }, { ok: false, queued: true, kind: 'update' }], 'their promises say they are still queued')
  t.same(stored(s.storage).map((m) => m.mutationId), [c.mutationId, r.mutationId], 'still persisted after close')

  // A new client and store ("after a reload") with the same storage, the server reachable.
  const again = await setup(t, { instance: s.instance, storage: s.storage })
  t.ok(again.store.tasks.some((task) => task.title === 'Written on the train'), 'the create is restored on top of the list')
  t.equal(again.store.get(task.id)?.title, 'Trip (offline)', 'and the rename')
  await until('both landed', again.store, ['confirmed', 'change'], () => again.store.pendingCount === 0)
  t.same(again.net.sent.filter((r) => r.key !== undefined).map((r) => r.key), [c.mutationId, r.mutationId], 'sent in order, with the keys they were given when made')
  const list = (await api(s.instance.baseUrl, 'GET', '/teams/red/tasks', { token: s.bob })).body.tasks as Task[]
  t.equal(list.filter((task) => task.title === 'Written on the train').length, 1, 'created once')
  t.match(list.find((x) => x.id === task.id), { title: 'Trip (offline)', status: 'done', version: 3 })
  const log = await eventLog(t, s.instance)
  for (const id of [key, c.mutationId, r.mutationId]) t.equal(log.filter((e) => e.mutationId === id).length, 1, `one event with mutationId ${id}`)
  t.same(stored(s.storage), [])
  t.same(again.store.tasks, list, 'the store agrees with the server')
})

t.test('a request whose answer was lost is retried with the same key, answered as a replay, and applied once', async (t) => {
  const s = await setup(t)
  const task = await seedTask(s, 'Draft')
  // The store hears no event, so only the retried request can tell it what happened.
  s.control.deafen()
  s.net.loseAnswer = new Set(['create-1', 'update-1'])
  const ids = ['create-1', 'update-1']
  const store = new TaskStore(s.client, 'red', { persist: { storage: new MemoryStorage() }, retry: RETRY, newMutationId: () => ids.shift() ?? 'extra' })
  t.teardown(() => store.close())
  await store.start()
  const created = store.create({ title: 'Answer lost' })
  const updated = store.update(task.id, { title: 'Draft, v2' })
  await until('both answered as replays', store, ['change', 'retrying'], () => s.net.sent.filter((r) => r.replayed).length === 2)
  t.same(s.net.sent.filter((r) => r.key !== undefined).map(({ method, key, status, replayed }) => ({ method, key, status, replayed })), [
    { method: 'POST', key: 'create-1', status: 'no answer', replayed: false },
    { method: 'POST', key: 'create-1', status: 200, replayed: true },
    { method: 'PATCH', key: 'update-1', status: 'no answer', replayed: false },
    { method: 'PATCH', key: 'update-1', status: 200, replayed: true }
  ], 'each sent twice with its key; the second answered from the stored result')
  t.equal(store.tasks.filter((x) => x.title === 'Answer lost').length, 1, 'shown once')
  await reconnect(s)
  t.match(await created, { ok: true, kind: 'create', task: { title: 'Answer lost', version: 1 } })
  t.match(await updated, { ok: true, kind: 'update', task: { title: 'Draft, v2', version: 2 } })
  const list = (await api(s.instance.baseUrl, 'GET', '/teams/red/tasks', { token: s.bob })).body.tasks as Task[]
  t.equal(list.filter((x) => x.title === 'Answer lost').length, 1, 'created once')
  t.match(list.find((x) => x.id === task.id), { title: 'Draft, v2', version: 2 }, 'updated once')
  const log = await eventLog(t, s.instance)
  t.equal(log.filter((e) => e.mutationId === 'create-1').length, 1, 'one event for the create')
  t.equal(log.filter((e) => e.mutationId === 'update-1').length, 1, 'one event for the update')
  t.same(store.tasks, list)
})

t.test('412: a conflict event with both versions; keepMine sends mine over theirs, takeTheirs drops it', async (t) => {
  const s = await setup(t)
  const conflicts: TaskConflict[] = []
  s.store.on('conflict', (c) => conflicts.push(c))
  const task = await seedTask(s, 'Plan')

  s.control.deafen()
  t.equal((await api(s.instance.baseUrl, 'PATCH', `/teams/red/tasks/${task.id}`, { token: s.bob, body: { title: 'Plan by bob' } })).status, 200)
  const mine = s.store.update(task.id, { title: 'Plan by alice' })
  const conflict = await nextEvent<TaskConflict>(s.store, 'conflict')
  t.match(conflict, { status: 412, kind: 'update', taskId: task.id, mine: { title: 'Plan by alice', version: 1 }, theirs: { title: 'Plan by bob', version: 2 } })
  t.equal(s.store.get(task.id)?.title, 'Plan by bob', 'while it waits, the store shows theirs')
  t.same(s.store.conflicts, [conflict])
  t.equal(s.store.unsentCount, 1, 'mine is kept, not dropped')
  t.equal(stored(s.storage).length, 1, 'and persisted')
  await reconnect(s)
  conflict.keepMine()
  t.equal(s.store.get(task.id)?.title, 'Plan by alice', 'keepMine shows mine again')
  t.match(await mine, { ok: true, task: { title: 'Plan by alice', version: 3 } })
  t.equal(s.net.sent.filter((r) => r.method === 'PATCH').at(-1)?.ifMatch, '"2"', 'sent over their version')
  t.match((await serverTask(s, task.id)).body, { title: 'Plan by alice', version: 3 })

  s.control.deafen()
  t.equal((await api(s.instance.baseUrl, 'PATCH', `/teams/red/tasks/${task.id}`, { token: s.bob, body: { description: 'notes by bob' } })).status, 200)
  const second = s.store.update(task.id, { title: 'Plan, final' })
  const follower = s.store.update(task.id, { status: 'done' })
  const other = await nextEvent<TaskConflict>(s.store, 'conflict')
  t.match(other, { status: 412, mine: { title: 'Plan, final' }, theirs: { title: 'Plan by alice', description: 'notes by bob', version: 4 } })
  other.takeTheirs()
  t.match(await second, { ok: false, error: { status: 412 } })
  t.match(await follower, { ok: false }, 'the change built on it is dropped with it')
  t.match(s.store.get(task.id), { title: 'Plan by alice', description: 'notes by bob', status: 'todo', version: 4 }, 'theirs, as the server has it')
  t.match((await serverTask(s, task.id)).body, { title: 'Plan by alice', status: 'todo', version: 4 }, 'nothing of mine reached the server')
  t.equal(conflicts.length, 2)
  t.same(s.store.conflicts, [])
  t.same(stored(s.storage), [])
})

t.test('404 of a task deleted meanwhile and 403 after losing the team surface as conflicts', async (t) => {
  const red = await tokenFor('alice', ['red'])
  const blue = await tokenFor('alice', ['blue'])
  let token = red
  const s = await setup(t, { getToken: () => token })
  s.store.on('conflict', () => {})
  const doomed = await seedTask(s, 'Doomed')

  s.control.deafen()
  t.equal((await api(s.instance.baseUrl, 'DELETE', `/teams/red/tasks/${doomed.id}`, { token: s.bob })).status, 204)
  const edit = s.store.update(doomed.id, { status: 'done' })
  const gone = await nextEvent<TaskConflict>(s.store, 'conflict')
  t.match(gone, { status: 404, kind: 'update', taskId: doomed.id, mine: { title: 'Doomed', status: 'done' }, theirs: null })
  t.equal(s.store.get(doomed.id), undefined, 'the store shows it gone while it waits')
  await reconnect(s)
  gone.keepMine()
  const recreated = await edit
  t.match(recreated, { ok: true, kind: 'create', task: { title: 'Doomed', status: 'done', version: 1 } }, 'keepMine re-creates it with my version')
  t.not(recreated.taskId, doomed.id)

  const kept = await seedTask(s, 'Kept')
  token = blue
  const refused = s.store.update(kept.id, { title: 'not mine to change' })
  const forbidden = await nextEvent<TaskConflict>(s.store, 'conflict')
  t.match(forbidden, { status: 403, mine: { title: 'not mine to change' }, theirs: { title: 'Kept', version: 1 } })
  forbidden.takeTheirs()
  t.match(await refused, { ok: false, error: { status: 403 } })
  t.match(s.store.get(kept.id), { title: 'Kept', version: 1 })
  token = red
  t.match((await serverTask(s, kept.id)).body, { title: 'Kept', version: 1 })
})
