import t, { type Test } from 'tap'
import Fastify from 'fastify'
import { join } from 'node:path'
import { AtlasClient, TaskStore, type TaskEvent } from '../client/index.js'
import { jwtAuthenticator } from '../examples/jwt-auth.js'
import { MemoryBus } from '../lib/memory-broker.js'
import { atlasRealtime } from '../plugins/index.js'
import { TEST_SECRET, api, listenInstance, startInstance, tokenFor, type Instance } from './helpers/app.js'
import { controlledWebSocket, until } from './helpers/sdk.js'

// `baseUrl` as a list: every failed attempt and every dropped connection moves on to the next
// instance, with the same backoff and a resume from the last seq applied.

/** Two instances of one deployment: one event log (a SQLite file) and one in-process bus. */
async function twoInstances (t: Test): Promise<[Instance, Instance]> {
  const databasePath = join(t.testdir(), 'atlas.db')
  const memoryBus = new MemoryBus()
  const a = await startInstance(t, { databasePath, realtime: { broker: { memoryBus } } })
  const b = await startInstance(t, { databasePath, realtime: { broker: { memoryBus } } })
  return [a, b]
}

t.test('the first instance dies: the client moves to the second and resumes, nothing missed or repeated', async (t) => {
  const [a, b] = await twoInstances(t)
  const bob = await tokenFor('bob', ['red'])
  const control = controlledWebSocket()
  const client = new AtlasClient({
    baseUrl: [a.baseUrl, b.baseUrl],
    token: await tokenFor('alice', ['red']),
    teams: ['red'],
    WebSocket: control.WebSocket,
    reconnect: { baseMs: 5, capMs: 20 }
  })
  t.teardown(() => { client.close() })
  const events: TaskEvent[] = []
  client.on('event', (e) => events.push(e))
  client.connect()
  const store = new TaskStore(client, 'red')
  await store.start()
  await until('open', client, ['state'], () => client.state === 'open')
  t.equal(new URL(control.urls[0]).port, new URL(a.baseUrl).port, 'the first attempt goes to the first instance')
  t.equal(client.baseUrl, a.baseUrl, 'and so do HTTP calls')

  const create = async (instance: Instance, title: string): Promise<void> => {
    const response = await api(instance.baseUrl, 'POST', '/teams/red/tasks', { token: bob, body: { title } })
    if (response.status !== 201) throw new Error(`create answered ${response.status}`)
  }
  await create(a, 'one')
  await create(b, 'two')
  await until('seq 2', client, ['event'], () => events.some((e) => e.seq === 2))

  // The client stays away (its attempts fail) while mutations go on elsewhere: it must resume them.
  control.blocked = true
  const attemptsBefore = control.urls.length
  await a.close()
  await until('a failed attempt', client, ['reconnect'], () => control.urls.length >= attemptsBefore + 1)
  await create(b, 'three')
  await create(b, 'four')
  await create(b, 'five')
  control.blocked = false
  await until('seq 5', client, ['event'], () => events.some((e) => e.seq === 5))
  t.equal(client.state, 'open')
  const last = new URL(control.urls.at(-1) ?? '')
  t.equal(last.port, new URL(b.baseUrl).port, 'connected to the second instance')
  t.equal(last.searchParams.get('since'), 'red:2', 'resumed from the last seq it had')
  const tried = control.urls.slice(attemptsBefore).map((url) => new URL(url).port)
  t.ok(tried.includes(new URL(a.baseUrl).port) && tried.includes(new URL(b.baseUrl).port), 'the attempts went round both instances')
  t.same(events.map((e) => e.seq), [1, 2, 3, 4, 5], 'every event once, in order')

  // HTTP follows the connection: the store's mutation goes to the live instance.
  t.equal(client.baseUrl, b.baseUrl)
  t.equal(client.api.baseUrl, b.baseUrl)
  const outcome = await store.create({ title: 'six' })
  t.ok(outcome.ok, 'a mutation after the fail-over is confirmed')
  await until('seq 6', client, ['event'], () => events.some((e) => e.seq === 6))
  t.same(events.map((e) => e.seq), [1, 2, 3, 4, 5, 6])
  t.same(store.tasks.map((task) => task.title), ['one', 'two', 'three', 'four', 'five', 'six'])
})

t.test('a dead first URL: the next one is tried at once, for the socket and the list', async (t) => {
  const [, b] = await twoInstances(t)
  const control = controlledWebSocket()
  const dead = 'http://127.0.0.1:1'
  const client = new AtlasClient({ baseUrl: [dead, `${b.baseUrl}/`], token: await tokenFor('alice', ['red']), WebSocket: control.WebSocket, reconnect: { baseMs: 5, capMs: 20 } })
  t.teardown(() => { client.close() })
  client.connect()
  await until('open', client, ['state'], () => client.state === 'open')
  t.same(control.urls.map((url) => new URL(url).origin), ['ws://127.0.0.1:1', b.wsUrl.replace('/realtime', '')], 'the dead one, then the next')
  await new TaskStore(client, 'red').start()
  t.equal(client.api.baseUrl, b.baseUrl, 'the list came from the live instance')
})

t.test('base URLs with a prefix: each socket is its /realtime', async (t) => {
  const app = Fastify()
  await app.register(atlasRealtime, { prefix: '/api', authenticate: jwtAuthenticator(TEST_SECRET), database: { databasePath: join(t.testdir(), 'atlas.db') } })
  const instance = await listenInstance(t, app)
  const control = controlledWebSocket()
  const client = new AtlasClient({ baseUrl: ['http://127.0.0.1:1/api', `${instance.baseUrl}/api`], token: await tokenFor('alice', ['red']), WebSocket: control.WebSocket, reconnect: { baseMs: 5, capMs: 20 } })
  t.teardown(() => { client.close() })
  client.connect()
  await new TaskStore(client, 'red').start()
  await until('open', client, ['state'], () => client.state === 'open')
  t.same(control.urls.map((url) => new URL(url).pathname), ['/api/realtime', '/api/realtime'])
  t.equal(client.api.baseUrl, `${instance.baseUrl}/api`)
})

t.test('realtimeUrl goes with a single baseUrl only', async (t) => {
  t.throws(() => new AtlasClient({ baseUrl: ['http://a.example', 'http://b.example'], realtimeUrl: 'ws://a.example/socket' }), /realtimeUrl goes with a single baseUrl/)
  t.throws(() => new AtlasClient({ baseUrl: [] }), /non-empty list/)
})
