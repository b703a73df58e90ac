/**
 * Issue #13, point 1 (the SDK): a client with `getToken` refreshes its credential on the open
 * socket before it expires (a `refresh` frame, no reconnect, no missed event); when it cannot
 * (getToken gives the same token, the server has no authenticateToken) it reconnects at the 4001
 * expiry as before. And what the SDK does with the server's revocations: a revoked membership
 * (`unsubscribed` reason `revoked`) drops the team, a revoked user (4004) stops the client unless
 * getToken gives a different token. All against a real server (the example app).
 */
import t, { type Test } from 'tap'
import Fastify from 'fastify'
import { randomUUID } from 'node:crypto'
import { join } from 'node:path'
import { SignJWT } from 'jose'
import { AtlasClient, AtlasClientError, CloseCode, TaskStore, refreshDelay, type AtlasClientEvents, type DisconnectInfo, type MutationOutcome } from '../client/index.js'
import { atlasRealtime } from '../plugins/index.js'
import { jwtVerifier } from '../examples/jwt-auth.js'
import { TEST_SECRET, api, listenInstance, startInstance, type Instance } from './helpers/app.js'
import { controlledWebSocket, nextEvent, rejectionOf, until, within } from './helpers/sdk.js'

/** A JWT of the example's kind; each one differs (its own `jti`), even two signed in the same second. */
async function freshToken (userId: string, teams: string[], expiresIn = '1h'): Promise<string> {
  return await new SignJWT({ teams })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(userId)
    .setJti(randomUUID())
    .setIssuedAt()
    .setExpirationTime(expiresIn)
    .sign(new TextEncoder().encode(TEST_SECRET))
}

interface Seen {
  errors: Array<AtlasClientEvents['error']>
  disconnects: DisconnectInfo[]
  stopped: AtlasClientError[]
  refreshed: Array<AtlasClientEvents['refreshed']>
  welcomes: Array<AtlasClientEvents['welcome']>
  events: Array<AtlasClientEvents['event']>
}

function record (client: AtlasClient): Seen {
  const seen: Seen = { errors: [], disconnects: [], stopped: [], refreshed: [], welcomes: [], events: [] }
  client.on('error', (e) => seen.errors.push(e))
  client.on('disconnect', (d) => seen.disconnects.push(d))
  client.on('stopped', (s) => seen.stopped.push(s))
  client.on('refreshed', (r) => seen.refreshed.push(r))
  client.on('welcome', (w) => seen.welcomes.push(w))
  client.on('event', (e) => seen.events.push(e))
  return seen
}



const FAST = { baseMs: 1, capMs: 5 }

async function createTask (instance: Instance, token: string, teamId: string, title: string): Promise<void> {
  const response = await api(instance.baseUrl, 'POST', `/teams/${teamId}/tasks`, { token, body: { title } })
  if (response.status !== 201) throw new Error(`create answered ${response.status}: ${JSON.stringify(response.body)}`)
}

function seqs (seen: Seen, teamId: string): number[] {
  return seen.events.filter((e) => e.teamId === teamId).map((e) => e.seq)
}

t.test('the refresh rule: 80% of the time left, at least 10 s before expiry, never under half of it, jittered sooner, none under 1 s', async (t) => {
  const none = (): number => 0
  t.equal(refreshDelay(3_600_000, none), 2_880_000, '1 h: at 48 min')
  t.equal(refreshDelay(60_000, none), 48_000)
  t.equal(refreshDelay(30_000, none), 20_000, '30 s: 10 s before expiry')
  t.equal(refreshDelay(12_000, none), 6_000, '12 s: half of it')
  t.equal(refreshDelay(3_600_000, () => 1), 2_592_000, 'jitter: up to 10% sooner')
  t.equal(refreshDelay(1_500, none), undefined, 'too short to refresh ahead: reconnect at expiry')
  t.equal(refreshDelay(-5_000, none), undefined, 'expired by this clock')
  t.equal(refreshDelay(90 * 24 * 3_600_000, none), 2 ** 31 - 1, 'a timer\'s longest delay')
})

t.test('short-lived tokens: refreshed on the open socket lifetime after lifetime, one socket, nothing missed', async (t) => {
  // Heartbeat rounds every 100 ms: a credential that expired closes the socket at once (4001).
  const instance = await startInstance(t, { databasePath: join(t.testdir(), 'atlas.db'), realtime: { websocket: { heartbeatMs: 100 } } })
  const writer = await freshToken('bob', ['red'])
  const control = controlledWebSocket()
  const issued: string[] = []
  const client = new AtlasClient({
    baseUrl: instance.baseUrl,
    // 4 s tokens: a JWT's exp is in whole seconds, so each lives 3 to 4 s from here.
    getToken: async () => { const token = await freshToken('alice', ['red'], '4s'); issued.push(token); return token },
    teams: ['red'],
    WebSocket: control.WebSocket,
    reconnect: FAST
  })
  t.teardown(() => { client.close() })
  const seen = record(client)
  client.connect()
  await within(new TaskStore(client, 'red').start(), 'start()')
  await until('open', client, ['state'], () => client.state === 'open')
  const firstExpiry = seen.welcomes[0].expiresAt
  t.ok(typeof firstExpiry === 'number' && firstExpiry > Date.now(), 'welcome says when the credential expires')
  await createTask(instance, writer, 'red', 'first')
  // Three refreshes take the socket past two of its credentials' lifetimes.
  await until('three refreshes', client, ['refreshed', 'disconnect'], () => seen.refreshed.length >= 3 || seen.disconnects.length > 0, 20_000)
  t.same(seen.disconnects, [], 'no disconnect: no 4001 at any expiry')
  t.ok(Date.now() > (firstExpiry as number) + 1_000, 'the socket outlived its first credential')
  t.equal(control.opened.length, 1, 'one socket')
  t.ok(seen.refreshed.every((r, i) => r.expiresAt !== undefined && r.expiresAt >= (i === 0 ? firstExpiry as number : seen.refreshed[i - 1].expiresAt as number)), 'each refresh moved the expiry on')
  t.same(seen.refreshed[0].teams, ['red'])
  const sent = control.received.filter((f) => f.type === 'refreshed').length
  t.equal(sent, seen.refreshed.length, 'one refreshed frame per event')
  await createTask(instance, writer, 'red', 'second')
  await until('both events', client, ['event'], () => seen.events.length === 2)
  t.same(seqs(seen, 'red'), [1, 2])
  t.equal(client.state, 'open')
})

t.test('no event lost across 100 refreshes on a busy team', async (t) => {
  const instance = await startInstance(t, {
    databasePath: join(t.testdir(), 'atlas.db'),
    realtime: { websocket: { maxRefreshesPerMinute: 1000, maxFramesPerSecond: 1000 }, routes: { maxMutationsPerUser: 0 } }
  })
  const writer = await freshToken('bob', ['red'])
  const control = controlledWebSocket()
  const client = new AtlasClient({
    baseUrl: instance.baseUrl,
    getToken: async () => await freshToken('alice', ['red']),
    teams: ['red'],
    WebSocket: control.WebSocket,
    reconnect: FAST
  })
  t.teardown(() => { client.close() })
  const seen = record(client)
  client.connect()
  await within(new TaskStore(client, 'red').start(), 'start()')
  await until('open', client, ['state'], () => client.state === 'open')

  // Two writers create tasks back to back for as long as the refreshes go on.
  let writing = true
  let created = 0
  const write = async (name: string): Promise<void> => {
    while (writing) {
      await createTask(instance, writer, 'red', `${name} ${created}`)
      created++
    }
  }
  const writers = [write('a'), write('b')]
  await until('the first events', client, ['event'], () => seen.events.length >= 5)
  const outcomes: boolean[] = []
  try {
    for (let i = 0; i < 100; i++) {
      outcomes.push(await within(client.refresh(), `refresh ${i + 1}`))
      // Interleaved with the events: a refresh after every few of them.
      if (i % 10 === 0) await until('more events', client, ['event'], () => seen.events.length > i)
    }
  } finally {
    writing = false
    await Promise.all(writers)
  }
  t.same(outcomes, new Array(100).fill(true), 'every refresh was taken')
  t.equal(seen.refreshed.length, 100)
  await until(`all ${created} events`, client, ['event'], () => seen.events.length >= created)
  const expected = Array.from({ length: created }, (_, i) => i + 1)
  t.same(seqs(seen, 'red'), expected, `exactly seq 1..${created}, once each, in order`)
  t.ok(created >= 20, `a busy team (${created} events during the refreshes)`)
  t.equal(control.opened.length, 1, 'one socket')
  t.same(seen.disconnects, [])
  t.same(seen.errors, [])
  t.comment(`${created} events across 100 refreshes, one socket`)
})

t.test('getToken gives the same token: no refresh frame; the client reconnects at the 4001 expiry with a fresh one', async (t) => {
  const instance = await startInstance(t, { databasePath: join(t.testdir(), 'atlas.db'), realtime: { websocket: { heartbeatMs: 100 } } })
  const writer = await freshToken('bob', ['red'])
  const control = controlledWebSocket()
  // A token cache that renews only once the token has expired, as some do.
  let cached = { token: await freshToken('alice', ['red'], '5s'), expiresAt: 0 }
  cached.expiresAt = (Math.floor(Date.now() / 1000) + 5) * 1000
  const client = new AtlasClient({
    baseUrl: instance.baseUrl,
    getToken: async () => {
      if (Date.now() >= cached.expiresAt) cached = { token: await freshToken('alice', ['red'], '1h'), expiresAt: Infinity }
      return cached.token
    },
    teams: ['red'],
    WebSocket: control.WebSocket,
    reconnect: FAST
  })
  t.teardown(() => { client.close() })
  const seen = record(client)
  client.connect()
  await within(new TaskStore(client, 'red').start(), 'start()')
  await createTask(instance, writer, 'red', 'before')
  await until('the expiry and a second welcome', client, ['welcome', 'stopped'], () => seen.welcomes.length === 2 || seen.stopped.length > 0, 10_000)
  t.match(seen.disconnects, [{ code: CloseCode.UNAUTHORIZED, reason: 'credentials expired', willReconnect: true }], 'the expiry closed the first socket')
  t.equal(control.opened.length, 2, 'reconnected once')
  t.same(seen.refreshed, [], 'nothing to refresh with')
  t.notOk(control.received.some((f) => f.type === 'refreshed' || (f.type === 'error' && f.code !== 'forbidden_team')), 'no refresh frame was sent')
  await createTask(instance, writer, 'red', 'after')
  await until('both events', client, ['event'], () => seen.events.length === 2)
  t.same(seqs(seen, 'red'), [1, 2], 'resumed, nothing missed')
})

t.test('a server without authenticateToken: refresh_unsupported, then the reconnect at the 4001 expiry', async (t) => {
  // The expiry is the app's own: 2.5 s after each upgrade, checked every 100 ms.
  const app = Fastify()
  let connections = 0
  await app.register(atlasRealtime, {
    authenticate: (request) => {
      if (request.headers.authorization === undefined) return null
      if (request.url.includes('/realtime')) connections++
      return { userId: 'alice', teams: ['red'], expiresAt: Date.now() + 2_500 }
    },
    database: { databasePath: join(t.testdir(), 'atlas.db') },
    websocket: { heartbeatMs: 100 }
  })
  const instance = await listenInstance(t, app)
  let n = 0
  const control = controlledWebSocket()
  const client = new AtlasClient({ baseUrl: instance.baseUrl, getToken: () => `token-${++n}`, teams: ['red'], WebSocket: control.WebSocket, reconnect: FAST })
  t.teardown(() => { client.close() })
  const seen = record(client)
  client.connect()
  await within(new TaskStore(client, 'red').start(), 'start()')
  await until('refresh_unsupported', client, ['error'], () => seen.errors.some((e) => e.code === 'refresh_unsupported'), 5_000)
  await until('the expiry and a second welcome', client, ['welcome'], () => seen.welcomes.length === 2, 5_000)
  t.match(seen.disconnects, [{ code: CloseCode.UNAUTHORIZED, willReconnect: true }])
  t.equal(control.opened.length, 2)
  t.equal(connections, 2)
  t.equal(control.received.filter((f) => f.type === 'error' && f.code === 'refresh_unsupported').length, 1, 'tried once on that socket, not again')
  t.same(seen.stopped, [])
})

t.test('a refused refresh: 4001, and the token compared with the next one is the refused one', async (t) => {
  const instance = await startInstance(t, { databasePath: join(t.testdir(), 'atlas.db') })
  const control = controlledWebSocket()
  const good = await freshToken('alice', ['red'])
  let next: string = good
  const client = new AtlasClient({ baseUrl: instance.baseUrl, getToken: () => next, teams: ['red'], WebSocket: control.WebSocket, reconnect: FAST })
  t.teardown(() => { client.close() })
  const seen = record(client)
  client.connect()
  await within(new TaskStore(client, 'red').start(), 'start()')
  await until('open', client, ['state'], () => client.state === 'open')
  next = 'not-a-jwt'
  t.equal(await within(client.refresh(), 'refresh()'), false, 'not refreshed')
  await until('stopped', client, ['stopped'], () => seen.stopped.length > 0)
  t.equal(seen.stopped[0].code, 'unauthorized')
  t.match(seen.stopped[0].message, /refresh refused.*same/)
  t.match(seen.disconnects, [{ code: CloseCode.UNAUTHORIZED, reason: 'unauthorized: refresh refused', willReconnect: false }])
  t.equal(control.opened.length, 1, 'no attempt with the token just refused')
})

t.test('a revoked membership: the team is dropped (forbidden_team), its store settles; other teams go on', async (t) => {
  const instance = await startInstance(t, { databasePath: join(t.testdir(), 'atlas.db') })
  const writer = await freshToken('bob', ['red', 'blue'])
  const alice = await freshToken('alice', ['red', 'blue'])
  const control = controlledWebSocket()
  let answered!: () => void
  const created = new Promise<void>((resolve) => { answered = resolve })
  const answers: typeof fetch = async (input, init) => {
    const response = await fetch(input, init)
    if (init?.method === 'POST') answered()
    return response
  }
  const client = new AtlasClient({ baseUrl: instance.baseUrl, token: alice, teams: ['red'], WebSocket: control.WebSocket, reconnect: FAST, fetch: answers })
  t.teardown(() => { client.close() })
  const seen = record(client)
  const store = new TaskStore(client, 'blue')
  const dropped: AtlasClientError[] = []
  store.on('dropped', (error) => dropped.push(error))
  client.connect()
  await within(store.start(), 'start()')
  // The store's own create is taken by the server, but its event is lost on the way: only its
  // HTTP answer can settle it now.
  control.drop = (frame) => frame.type === 'task.created' && frame.teamId === 'blue'
  const outcome = store.create({ title: 'mine' })
  await control.arrived('the created event', (f) => f.type === 'task.created' && f.teamId === 'blue')
  await created
  t.equal(store.pendingCount, 1, 'waiting for its event')
  const waiting = new TaskStore(client, 'blue')
  control.drop = undefined

  await instance.app.atlasRevoke({ userId: 'alice', teamId: 'blue' })
  const error = await nextEvent<AtlasClientEvents['error']>(client, 'error', (e) => e.teamId === 'blue')
  t.match(error, { code: 'forbidden_team', teamId: 'blue', message: /revoked/ })
  t.notOk(client.teams.includes('blue'), 'no longer followed')
  t.notOk(client.allowedTeams?.includes('blue'), 'no longer allowed')
  t.equal(dropped.length, 1, 'the store was told')
  t.match(dropped[0], { code: 'forbidden_team', teamId: 'blue' })
  t.match(await within<MutationOutcome>(outcome, 'the create'), { ok: true, kind: 'create' }, 'the mutation the server took settled from its answer')
  t.equal(store.pendingCount, 0)
  t.equal((await rejectionOf(waiting.start()) as AtlasClientError).code, 'forbidden_team', 'starting it again is refused at once')

  await createTask(instance, writer, 'blue', 'after, blue')
  await createTask(instance, writer, 'red', 'after, red')
  await until('the red event', client, ['event'], () => seen.events.some((e) => e.teamId === 'red'))
  t.same(seen.events.filter((e) => e.teamId === 'blue'), [], 'nothing of blue any more')
  t.equal(client.state, 'open')
  t.equal(control.opened.length, 1, 'no reconnect')
  t.same(seen.stopped, [])
})

t.test('a refresh without a team drops it; a later one that gives it back lets it be followed again', async (t) => {
  const instance = await startInstance(t, { databasePath: join(t.testdir(), 'atlas.db') })
  const writer = await freshToken('bob', ['red', 'blue'])
  let teams = ['red', 'blue']
  const control = controlledWebSocket()
  const client = new AtlasClient({ baseUrl: instance.baseUrl, getToken: async () => await freshToken('alice', teams), teams: ['red'], WebSocket: control.WebSocket, reconnect: FAST })
  t.teardown(() => { client.close() })
  const seen = record(client)
  const store = new TaskStore(client, 'blue')
  const dropped: AtlasClientError[] = []
  store.on('dropped', (error) => dropped.push(error))
  client.connect()
  await within(store.start(), 'start()')
  teams = ['red']
  t.equal(await within(client.refresh(), 'refresh()'), true)
  t.match(seen.refreshed, [{ teams: ['red'], added: [], removed: ['blue'] }])
  t.match(seen.errors, [{ code: 'forbidden_team', teamId: 'blue' }])
  t.equal(dropped.length, 1)
  teams = ['red', 'blue']
  t.equal(await within(client.refresh(), 'refresh()'), true)
  t.match(seen.refreshed[1], { teams: ['red', 'blue'], added: ['blue'], removed: [] })
  await within(store.start(), 'start() again')
  await createTask(instance, writer, 'blue', 'back')
  await until('the blue event', client, ['event'], () => seen.events.some((e) => e.teamId === 'blue'))
  t.equal(control.opened.length, 1, 'no reconnect')
})

async function revokedUser (t: Test, getToken: (() => Promise<string>) | undefined): Promise<{ client: AtlasClient, seen: Seen, control: ReturnType<typeof controlledWebSocket>, instance: Instance, started: Promise<void> }> {
  const instance = await startInstance(t, { databasePath: join(t.testdir(), 'atlas.db') })
  const control = controlledWebSocket()
  const client = getToken === undefined
    ? new AtlasClient({ baseUrl: instance.baseUrl, token: await freshToken('alice', ['red']), teams: ['red'], WebSocket: control.WebSocket, reconnect: FAST })
    : new AtlasClient({ baseUrl: instance.baseUrl, getToken, teams: ['red'], WebSocket: control.WebSocket, reconnect: FAST })
  t.teardown(() => { client.close() })
  const seen = record(client)
  client.connect()
  const started = new TaskStore(client, 'red').start()
  await within(started, 'start()')
  await until('open', client, ['state'], () => client.state === 'open')
  await instance.app.atlasRevoke({ userId: 'alice' })
  return { client, seen, control, instance, started }
}

t.test('a revoked user (4004) with a fixed token: error revoked, the client stops', async (t) => {
  const { client, seen, control } = await revokedUser(t, undefined)
  await until('stopped', client, ['stopped'], () => seen.stopped.length > 0)
  t.match(seen.errors, [{ code: 'revoked' }])
  t.equal(seen.stopped[0].code, 'revoked')
  t.ok(seen.stopped[0] instanceof AtlasClientError)
  t.match(seen.disconnects, [{ code: CloseCode.REVOKED, reason: 'revoked', willReconnect: false }])
  t.equal(client.state, 'closed')
  t.equal(client.stoppedBy?.code, 'revoked')
  t.equal(control.opened.length, 1, 'no reconnect')
  t.equal((await rejectionOf(new TaskStore(client, 'red').start()) as AtlasClientError).code, 'revoked', 'a store started now is told why')
})

t.test('a revoked user (4004) whose getToken gives the same token: the client stops', async (t) => {
  const token = await freshToken('alice', ['red'])
  const { client, seen, control } = await revokedUser(t, async () => token)
  await until('stopped', client, ['stopped'], () => seen.stopped.length > 0)
  t.equal(seen.stopped[0].code, 'revoked')
  t.match(seen.stopped[0].message, /same/)
  t.equal(control.opened.length, 1)
})

t.test('a revoked user (4004) whose getToken gives a different token: error revoked, then it reconnects and resumes', async (t) => {
  const { client, seen, control, instance } = await revokedUser(t, async () => await freshToken('alice', ['red']))
  await until('a second welcome', client, ['welcome'], () => seen.welcomes.length === 2)
  t.match(seen.errors, [{ code: 'revoked' }], 'told')
  t.match(seen.disconnects, [{ code: CloseCode.REVOKED, willReconnect: true }])
  t.same(seen.stopped, [])
  t.equal(control.opened.length, 2)
  await createTask(instance, await freshToken('bob', ['red']), 'red', 'after')
  await until('the event', client, ['event'], () => seen.events.length === 1)
  t.same(seqs(seen, 'red'), [1])
})
