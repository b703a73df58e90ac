// A team's list is fetched only once the current socket has the team's `subscribed` (or
// `resync`): docs/protocol.md, "Resync procedure". A list read earlier can be older than the
// point the subscription starts from, and the events in between would never come.
import t from 'tap'
import { join } from 'node:path'
import { AtlasClient, TaskStore, type Snapshot } from '../client/index.js'
import { api, startInstance, tokenFor, type Instance } from './helpers/app.js'
import { controlledWebSocket, nextEvent, until, within } from './helpers/sdk.js'


async function createTask (instance: Instance, token: string, title: string): Promise<void> {
  const response = await api(instance.baseUrl, 'POST', '/teams/red/tasks', { token, body: { title } })
  if (response.status !== 201) throw new Error(`create answered ${response.status}: ${JSON.stringify(response.body)}`)
}

async function serverState (instance: Instance, token: string): Promise<{ tasks: unknown[], seq: number }> {
  return (await api(instance.baseUrl, 'GET', '/teams/red/tasks', { token })).body
}

function isList (input: Parameters<typeof fetch>[0], init: Parameters<typeof fetch>[1]): boolean {
  return (init?.method ?? 'GET') === 'GET' && /\/teams\/red\/tasks(\?|$)/.test(String(input))
}

t.test('a store of a team in the client\'s teams: its list waits for the subscription, so an event committed before the subscribe is not lost', async (t) => {
  const instance = await startInstance(t, { databasePath: join(t.testdir(), 'atlas.db') })
  const [alice, bob] = await Promise.all([tokenFor('alice', ['red']), tokenFor('bob', ['red'])])
  for (let i = 1; i <= 6; i++) await createTask(instance, bob, `seed ${i}`)

  // What happened, in order, as the SDK saw it.
  const log: string[] = []
  // A list the server has answered is handed to the SDK only when `gate` opens: so that (with an
  // SDK that fetches too early) it arrives after the subscribe went out without a position.
  let answered!: () => void
  const listAnswered = new Promise<void>((resolve) => { answered = resolve })
  let openGate!: () => void
  const gate = new Promise<void>((resolve) => { openGate = resolve })
  const gatedFetch: typeof fetch = async (input, init) => {
    if (!isList(input, init)) return await fetch(input, init)
    log.push('list')
    const response = await fetch(input, init)
    answered()
    await gate
    return response
  }
  const control = controlledWebSocket()
  const client = new AtlasClient({ baseUrl: instance.baseUrl, token: alice, teams: ['red'], WebSocket: control.WebSocket, fetch: gatedFetch })
  t.teardown(() => { client.close() })
  client.on('subscribed', ({ teamId }) => log.push(`subscribed ${teamId}`))
  const snapshots: Snapshot[] = []
  client.on('snapshot', (s) => snapshots.push(s))
  const store = new TaskStore(client, 'red')
  t.teardown(() => { store.close() })

  // The client subscribes when the welcome arrives (a first connect names no team in its URL):
  // the welcome waits at the client while an event is committed.
  control.hold = (f) => f.type === 'welcome'
  const started = store.start()
  client.connect()
  await control.arrived('the welcome', (f) => f.type === 'welcome')
  // An SDK that loads at once has its list read by now (at seq 6): let the server answer it first.
  if (log.includes('list')) await listAnswered
  await createTask(instance, bob, 'between the list and the subscribe')
  // The subscription starts at seq 7; its `subscribed` is held back while the gate opens.
  control.hold = (f) => f.type === 'subscribed' && f.teamId === 'red'
  control.release()
  await control.arrived('subscribed red', (f) => f.type === 'subscribed' && f.teamId === 'red')
  const early = log.includes('list')
  openGate()
  if (early) await nextEvent(client, 'snapshot')
  t.same(log, [], 'no list before the subscription is live')

  const subscribed = nextEvent(client, 'subscribed')
  control.hold = undefined
  control.release()
  await within(subscribed, 'the subscribed event')
  await within(started, 'start()')
  const server = await serverState(instance, alice)
  t.equal(server.seq, 7)
  t.equal(store.seq, 7, 'the store is at the server\'s seq, without another event')
  t.same(store.tasks, server.tasks, 'the store shows the server\'s list')
  t.same(log, ['subscribed red', 'list'], 'one list, after the subscription')
  t.match(snapshots, [{ teamId: 'red', seq: 7, reason: 'initial' }])
})

t.test('a resync asked for while the socket is away waits for the next socket\'s subscription', async (t) => {
  const instance = await startInstance(t, { databasePath: join(t.testdir(), 'atlas.db') })
  const [alice, bob] = await Promise.all([tokenFor('alice', ['red']), tokenFor('bob', ['red'])])
  await createTask(instance, bob, 'first')
  const log: string[] = []
  const loggedFetch: typeof fetch = async (input, init) => {
    if (isList(input, init)) log.push('list')
    return await fetch(input, init)
  }
  const control = controlledWebSocket()
  const client = new AtlasClient({ baseUrl: instance.baseUrl, token: alice, teams: ['red'], WebSocket: control.WebSocket, fetch: loggedFetch, reconnect: { baseMs: 1, capMs: 20 } })
  t.teardown(() => { client.close() })
  client.on('subscribed', ({ teamId }) => log.push(`subscribed ${teamId}`))
  client.on('disconnect', () => log.push('disconnect'))
  const snapshots: Snapshot[] = []
  client.on('snapshot', (s) => snapshots.push(s))
  const store = new TaskStore(client, 'red')
  t.teardown(() => { store.close() })
  client.connect()
  await within(store.start(), 'start()')
  t.same(log, ['subscribed red', 'list'])

  control.blocked = true
  const away = nextEvent(client, 'disconnect')
  for (const ws of instance.app.websocketServer.clients) ws.terminate()
  await within(away, 'the disconnect')
  client.resync('red')
  await createTask(instance, bob, 'while away')
  // Attempts fail (blocked) while the event is committed; no list meanwhile.
  await until('a failed attempt', client, ['reconnect'], () => control.opened.length >= 2)
  t.same(log.filter((entry) => entry !== 'disconnect'), ['subscribed red', 'list'], 'no list while no socket has the team')

  control.blocked = false
  const reloaded = nextEvent<Snapshot>(client, 'snapshot', (s) => s.reason === 'requested')
  await within(reloaded, 'the requested snapshot')
  t.same(log.filter((entry) => entry !== 'disconnect').slice(2), ['subscribed red', 'list'], 'one list, after the new socket\'s subscription')
  const server = await serverState(instance, alice)
  t.equal(store.seq, server.seq)
  t.same(store.tasks, server.tasks)
})
