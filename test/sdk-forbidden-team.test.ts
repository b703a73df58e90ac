// A `subscribe` the server refuses with `forbidden_team` (the membership was revoked after the
// `welcome` that listed the team, before the subscribe reached the server): the error frame
// names its team, and the SDK drops that team as it does on `unsubscribed` reason `revoked`.
import t, { type Test } from 'tap'
import { join } from 'node:path'
import { AtlasClient, AtlasClientError, TaskStore, type AtlasClientEvents } from '../client/index.js'
import { api, startInstance, tokenFor, type Instance } from './helpers/app.js'
import { controlledWebSocket, nextEvent, until, type SocketControl } from './helpers/sdk.js'

interface Setup {
  instance: Instance
  control: SocketControl
  client: AtlasClient
  store: TaskStore
  errors: Array<AtlasClientEvents['error']>
  dropped: AtlasClientError[]
  /** The writer's token (bob keeps both teams). */
  writer: string
}

async function setup (t: Test, teams: string[]): Promise<Setup> {
  const instance = await startInstance(t, { databasePath: join(t.testdir(), 'atlas.db') })
  const [alice, writer] = await Promise.all([tokenFor('alice', ['red', 'blue']), tokenFor('bob', ['red', 'blue'])])
  const control = controlledWebSocket()
  const client = new AtlasClient({ baseUrl: instance.baseUrl, token: alice, teams, WebSocket: control.WebSocket, reconnect: { baseMs: 1, capMs: 5 } })
  t.teardown(() => { client.close() })
  const errors: Array<AtlasClientEvents['error']> = []
  client.on('error', (e) => errors.push(e))
  const store = new TaskStore(client, 'blue')
  t.teardown(() => { store.close() })
  const dropped: AtlasClientError[] = []
  store.on('dropped', (error) => dropped.push(error))
  return { instance, control, client, store, errors, dropped, writer }
}

/** The promise's outcome, without waiting for it: 'pending' if it has not settled by the next macrotask. */
async function outcomeNow (promise: Promise<unknown>): Promise<unknown> {
  return await Promise.race([promise.then(() => 'resolved', (err: unknown) => err), new Promise((resolve) => setImmediate(() => resolve('pending')))])
}

async function checkDropped (t: Test, s: Setup, started: Promise<void>): Promise<void> {
  t.match(s.errors.filter((e) => e.code === 'forbidden_team'), [{ code: 'forbidden_team', teamId: 'blue', message: /blue/ }], 'one error, naming its team')
  t.notOk(s.client.teams.includes('blue'), 'no longer followed')
  t.same(s.client.allowedTeams, ['red'], 'no longer allowed')
  t.equal(s.dropped.length, 1, 'the store was told')
  t.match(s.dropped[0], { code: 'forbidden_team', teamId: 'blue' })
  t.notOk(s.store.ready, 'the store is not ready')
  t.match(await outcomeNow(started), { code: 'forbidden_team', teamId: 'blue' }, 'start() rejected')
  // A later start() is refused at once: the client knows the team is not the user's.
  t.match(await outcomeNow(s.store.start()), { code: 'forbidden_team', teamId: 'blue' }, 'starting again is refused at once')
  // The other team goes on, on the same socket.
  await until('red subscribed', s.client, ['subscribed', 'snapshot'], () => s.client.lastSeq('red') !== undefined)
  const heard = nextEvent(s.client, 'event', (e: { teamId: string }) => e.teamId === 'red')
  const created = await api(s.instance.baseUrl, 'POST', '/teams/red/tasks', { token: s.writer, body: { title: 'red goes on' } })
  t.equal(created.status, 201)
  await heard
  t.equal(s.client.state, 'open')
  t.equal(s.control.opened.length, 1, 'no reconnect')
}

t.test('a subscribe refused after the welcome: the team is dropped, its store rejects start() and emits dropped', async (t) => {
  const s = await setup(t, ['red'])
  s.client.connect()
  await nextEvent(s.client, 'welcome')
  t.same(s.client.allowedTeams, ['red', 'blue'], 'the welcome listed blue')
  // Revoked while the socket is open and not subscribed to blue: the server says nothing yet.
  await s.instance.app.atlasRevoke({ userId: 'alice', teamId: 'blue' })
  const refused = s.control.arrived('the forbidden_team frame', (f) => f.type === 'error' && f.code === 'forbidden_team')
  const started = s.store.start()
  await refused
  await checkDropped(t, s, started)
})

t.test('a team of the client\'s teams option, revoked between the welcome and the subscribe: dropped, not loaded', async (t) => {
  const s = await setup(t, ['red', 'blue'])
  // The welcome waits at the client until the membership is gone on the server: the client's
  // subscribe (sent on the welcome) then reaches a server that refuses blue.
  s.control.hold = (f) => f.type === 'welcome'
  const started = s.store.start()
  s.client.connect()
  await s.control.arrived('the welcome', (f) => f.type === 'welcome')
  await s.instance.app.atlasRevoke({ userId: 'alice', teamId: 'blue' })
  s.control.hold = undefined
  const refused = s.control.arrived('the forbidden_team frame', (f) => f.type === 'error' && f.code === 'forbidden_team')
  s.control.release()
  await refused
  await checkDropped(t, s, started)
})
