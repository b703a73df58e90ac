import t, { type Test } from 'tap'
import Fastify, { type FastifyRequest } from 'fastify'
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http'
import { join } from 'node:path'
import { AtlasClient, AtlasClientError, BEARER_SUBPROTOCOL_PREFIX, CloseCode, SUBPROTOCOL, TaskStore, type DisconnectInfo } from '../client/index.js'
import { accessTokenOf, atlasRealtime } from '../plugins/index.js'
import type { Principal } from '../lib/types.js'
import { api, listenInstance, startInstance, tokenFor, type Instance } from './helpers/app.js'
import { controlledWebSocket, nextEvent, rejectionOf, until, within } from './helpers/sdk.js'

// How the SDK carries a credential (docs/client-sdk.md, "Credentials"), checked on the upgrade
// requests as the server received them, and what it does when the server refuses one.

interface Upgrade {
  url: string
  headers: IncomingHttpHeaders
  /** Request line target and every raw header line, as they came. */
  raw: string
}

/** Records every upgrade request before anything (atlas-credentials included) touches it. */
function captureUpgrades (instance: Instance): Upgrade[] {
  const seen: Upgrade[] = []
  instance.app.server.prependListener('upgrade', (request: IncomingMessage) => {
    seen.push({ url: request.url ?? '', headers: { ...request.headers }, raw: [request.url, ...request.rawHeaders].join('\n') })
  })
  return seen
}

/** An app whose own authenticate decides (a cookie session, an API key…), not the example's JWTs. */
async function appWith (t: Test, authenticate: (request: FastifyRequest) => Principal | null, options: { heartbeatMs?: number } = {}): Promise<Instance> {
  const app = Fastify()
  await app.register(atlasRealtime, { authenticate, database: { databasePath: join(t.testdir(), 'atlas.db') }, websocket: { heartbeatMs: options.heartbeatMs } })
  return await listenInstance(t, app)
}


/** Records the client's `error`, `disconnect` and `stopped` events. */
function record (client: AtlasClient): { errors: Array<{ code: string, message: string, teamId?: string }>, disconnects: DisconnectInfo[], stopped: AtlasClientError[] } {
  const seen = { errors: [] as Array<{ code: string, message: string, teamId?: string }>, disconnects: [] as DisconnectInfo[], stopped: [] as AtlasClientError[] }
  client.on('error', (e) => seen.errors.push(e))
  client.on('disconnect', (d) => seen.disconnects.push(d))
  client.on('stopped', (s) => seen.stopped.push(s))
  return seen
}

const FAST = { baseMs: 1, capMs: 5 }


/** Welcomed by the server (a store's start() can resolve earlier: the list comes over HTTP). */
async function opened (client: AtlasClient): Promise<void> {
  await until('the client to be open', client, ['state'], () => client.state === 'open')
}

t.test('no credential (a cookie session): no Authorization header, no credential entry, nothing "undefined"', async (t) => {
  // Stands for an authenticate reading a session cookie: it needs no bearer token at all.
  const instance = await appWith(t, () => ({ userId: 'guest', teams: ['red'] }))
  const upgrades = captureUpgrades(instance)
  const sent: Array<Record<string, string>> = []
  const spyFetch: typeof fetch = async (input, init) => {
    sent.push({ ...(init?.headers as Record<string, string>) })
    return await fetch(input, init)
  }
  for (const [name, WebSocket] of [['ws (Node)', undefined], ['browser-like class', controlledWebSocket({ supportsHeaders: false }).WebSocket]] as const) {
    const before = upgrades.length
    const client = new AtlasClient({ baseUrl: instance.baseUrl, teams: ['red'], fetch: spyFetch, WebSocket })
    t.teardown(() => { client.close() })
    client.connect()
    await within(new TaskStore(client, 'red').start(), 'start()')
    await opened(client)
    t.equal(client.userId, 'guest', `${name}: connected`)
    const upgrade = upgrades[before]
    t.equal(upgrades.length, before + 1, `${name}: one upgrade`)
    t.equal(upgrade.headers.authorization, undefined, `${name}: no Authorization header on the upgrade`)
    t.equal(upgrade.headers['sec-websocket-protocol'], SUBPROTOCOL, `${name}: only the protocol is offered`)
    t.notMatch(upgrade.url, /access_token/, `${name}: no access_token in the URL`)
    t.notMatch(upgrade.raw, /undefined|null/, `${name}: nothing reads "undefined" or "null" in the request`)
    t.ok(sent.length > 0, `${name}: the list was fetched`)
    t.ok(sent.every((headers) => !Object.keys(headers).some((h) => h.toLowerCase() === 'authorization')), `${name}: no Authorization header over HTTP`)
    t.notMatch(JSON.stringify(sent), /undefined/)
    client.close()
  }
})

t.test('in Node (ws) the credential goes in the Authorization header; never in the URL', async (t) => {
  const instance = await startInstance(t, { databasePath: join(t.testdir(), 'atlas.db') })
  const upgrades = captureUpgrades(instance)
  const token = await tokenFor('alice', ['red'])
  // No WebSocket option: the SDK loads the ws package itself.
  const client = new AtlasClient({ baseUrl: instance.baseUrl, token, teams: ['red'] })
  t.teardown(() => { client.close() })
  client.connect()
  await within(new TaskStore(client, 'red').start(), 'start()')
  await opened(client)
  t.equal(client.userId, 'alice')
  t.equal(upgrades.length, 1)
  t.equal(upgrades[0].headers.authorization, `Bearer ${token}`)
  t.equal(upgrades[0].headers['sec-websocket-protocol'], SUBPROTOCOL, 'the protocol only: the credential is in the header')
  t.notOk(upgrades[0].raw.split('\n')[0].includes(token), 'the token is not in the URL')
})

t.test('a browser-like WebSocket (no headers) sends the credential as a subprotocol entry the server reads', async (t) => {
  // Not ASCII, and with the characters base64 would turn into + / =: the entry must stay a valid token.
  const token = 'tøken/with+odd=chars?'
  const instance = await appWith(t, (request) => accessTokenOf(request) === token ? { userId: 'alice', teams: ['red'] } : null)
  const upgrades = captureUpgrades(instance)
  const control = controlledWebSocket({ supportsHeaders: false })
  const client = new AtlasClient({ baseUrl: instance.baseUrl, token, teams: ['red'], WebSocket: control.WebSocket })
  t.teardown(() => { client.close() })
  client.connect()
  await within(new TaskStore(client, 'red').start(), 'start()')
  await opened(client)
  t.equal(client.userId, 'alice', 'the server authenticated the subprotocol credential')
  t.equal(upgrades[0].headers.authorization, undefined)
  const offered = String(upgrades[0].headers['sec-websocket-protocol']).split(',').map((s) => s.trim())
  t.equal(offered.length, 2)
  t.equal(offered[0], SUBPROTOCOL, 'the protocol first')
  t.ok(offered[1].startsWith(BEARER_SUBPROTOCOL_PREFIX), 'then the credential entry')
  const encoded = offered[1].slice(BEARER_SUBPROTOCOL_PREFIX.length)
  t.match(encoded, /^[A-Za-z0-9_-]+$/, 'base64url, no padding')
  t.equal(Buffer.from(encoded, 'base64url').toString('utf8'), token)
  t.notMatch(upgrades[0].url, /access_token|t%C3%B8ken/)
})

t.test('a refused credential: error unauthorized, the client stops instead of retrying, start() rejects', async (t) => {
  const instance = await startInstance(t, { databasePath: join(t.testdir(), 'atlas.db') })
  const upgrades = captureUpgrades(instance)
  for (const [name, WebSocket] of [['ws (Node)', undefined], ['browser-like class', controlledWebSocket({ supportsHeaders: false }).WebSocket]] as const) {
    const before = upgrades.length
    const client = new AtlasClient({ baseUrl: instance.baseUrl, token: 'not-a-valid-token', reconnect: FAST, WebSocket })
    t.teardown(() => { client.close() })
    const seen = record(client)
    const store = new TaskStore(client, 'red')
    const started = store.start()
    client.connect()
    const err = await rejectionOf(started)
    t.ok(err instanceof AtlasClientError, `${name}: a typed error`)
    t.equal((err as AtlasClientError).code, 'unauthorized', `${name}: code unauthorized`)
    t.same(seen.errors.map((e) => e.code), ['unauthorized'], `${name}: one error event`)
    t.match(seen.errors[0].message, /unauthorized/)
    t.match(seen.disconnects, [{ code: CloseCode.UNAUTHORIZED, willReconnect: false }], `${name}: told by 4001, no reconnect`)
    t.equal(client.state, 'closed')
    t.equal(client.stoppedBy?.code, 'unauthorized')
    t.equal(upgrades.length, before + 1, `${name}: one attempt, no retry loop`)
    // Whoever calls start() now hears it at once.
    t.equal((await rejectionOf(new TaskStore(client, 'red').start()) as AtlasClientError).code, 'unauthorized')
  }
})

t.test('getToken: asked again after a refusal; a fresh token connects, the same one stops the client', async (t) => {
  const instance = await startInstance(t, { databasePath: join(t.testdir(), 'atlas.db') })
  const upgrades = captureUpgrades(instance)
  const good = await tokenFor('alice', ['red'])
  const given: string[] = []
  const tokens = ['stale-token']
  const client = new AtlasClient({
    baseUrl: instance.baseUrl,
    getToken: async () => { const token = tokens.shift() ?? good; given.push(token); return token },
    teams: ['red'],
    reconnect: FAST
  })
  t.teardown(() => { client.close() })
  const seen = record(client)
  client.connect()
  await within(new TaskStore(client, 'red').start(), 'start()')
  await opened(client)
  t.equal(client.userId, 'alice')
  t.same(seen.errors.map((e) => e.code), ['unauthorized'])
  t.match(seen.disconnects, [{ code: CloseCode.UNAUTHORIZED, willReconnect: true }])
  t.same(upgrades.map((u) => u.headers.authorization), ['Bearer stale-token', `Bearer ${good}`], 'the retry carried the fresh token')
  t.same(given.slice(0, 2), ['stale-token', good], 'asked before the first attempt, then after the refusal')
  client.close()

  // A getToken that can only give the refused token again: no point in retrying.
  const stuck = new AtlasClient({ baseUrl: instance.baseUrl, getToken: () => 'stale-token', reconnect: FAST })
  t.teardown(() => { stuck.close() })
  const stuckSeen = record(stuck)
  const before = upgrades.length
  const started = new TaskStore(stuck, 'red').start()
  stuck.connect()
  t.equal((await rejectionOf(started) as AtlasClientError).code, 'unauthorized')
  t.match(stuckSeen.disconnects, [{ code: CloseCode.UNAUTHORIZED, willReconnect: false }])
  t.equal(upgrades.length, before + 1, 'one attempt')
})

t.test('credentials that expire on an open socket: 4001, a fresh token from getToken, resumed with nothing missed', async (t) => {
  // 'short' lasts 300 ms from each check; the server closes its socket at the first heartbeat after.
  const instance = await appWith(t, (request) => {
    const token = accessTokenOf(request)
    if (token === 'short') return { userId: 'alice', teams: ['red'], expiresAt: Date.now() + 300 }
    return token === 'long' ? { userId: 'alice', teams: ['red'] } : null
  }, { heartbeatMs: 100 })
  // The app's token source has a new token after the one the socket opened with.
  const given: string[] = []
  const client = new AtlasClient({
    baseUrl: instance.baseUrl,
    getToken: () => { const token = given.length === 0 ? 'short' : 'long'; given.push(token); return token },
    teams: ['red'],
    reconnect: FAST
  })
  t.teardown(() => { client.close() })
  const seen = record(client)
  const seqs: number[] = []
  client.on('event', (e) => seqs.push(e.seq))
  client.connect()
  await within(new TaskStore(client, 'red').start(), 'start()')
  await opened(client)
  t.equal((await api(instance.baseUrl, 'POST', '/teams/red/tasks', { token: 'long', body: { title: 'before' } })).status, 201)
  await until('seq 1', client, ['event'], () => seqs.includes(1))
  await until('the expiry', client, ['disconnect'], () => seen.disconnects.length > 0)
  t.match(seen.disconnects, [{ code: CloseCode.UNAUTHORIZED, reason: 'credentials expired', willReconnect: true }])
  t.match(seen.errors, [{ code: 'unauthorized', message: 'credentials expired' }])
  t.equal((await api(instance.baseUrl, 'POST', '/teams/red/tasks', { token: 'long', body: { title: 'after' } })).status, 201)
  await until('seq 2', client, ['event'], () => seqs.includes(2))
  t.same(seqs, [1, 2])
  await opened(client)
  t.same(seen.errors.map((e) => e.code), ['unauthorized'], 'refused once, then the fresh token')
})

t.test('a team that is not the user\'s: start() rejects with forbidden_team, by welcome or by close 4003', async (t) => {
  const instance = await startInstance(t, { databasePath: join(t.testdir(), 'atlas.db') })
  const red = await tokenFor('alice', ['red'])
  const blue = await tokenFor('alice', ['blue'])
  let current = red
  const control = controlledWebSocket()
  const client = new AtlasClient({ baseUrl: instance.baseUrl, getToken: () => current, reconnect: FAST, WebSocket: control.WebSocket })
  t.teardown(() => { client.close() })
  const seen = record(client)
  client.connect()

  // Asked for before the server said which teams are hers: refused after the welcome.
  const err = await rejectionOf(new TaskStore(client, 'blue').start())
  t.ok(err instanceof AtlasClientError)
  t.match(err, { code: 'forbidden_team', teamId: 'blue' })
  await within(new TaskStore(client, 'red').start(), 'start()')
  // Asked for once she is known not to be a member: refused at once.
  t.match(await rejectionOf(new TaskStore(client, 'blue').start()), { code: 'forbidden_team', teamId: 'blue' })

  // She loses red while away: the reconnect names red in its URL, and the server answers 4003.
  current = blue
  const dropped = nextEvent<DisconnectInfo>(client, 'disconnect', (d) => d.code === CloseCode.FORBIDDEN)
  for (const ws of instance.app.websocketServer.clients) ws.close(CloseCode.GOING_AWAY, 'restart')
  const info = await dropped
  t.match(info, { reason: 'forbidden_team: red', willReconnect: true })
  t.match(seen.errors.at(-1), { code: 'forbidden_team', teamId: 'red' })
  t.same(client.teams, [], 'red is dropped')
  await until('open again', client, ['state'], () => client.state === 'open')
  t.same(client.allowedTeams, ['blue'], 'and the client goes on')
  t.match(await rejectionOf(new TaskStore(client, 'red').start()), { code: 'forbidden_team', teamId: 'red' })
  t.same(seen.stopped, [])
})

t.test('retries run out against a dead server: start() rejects with retries_exhausted', async (t) => {
  // Port 1: nothing listens, every attempt is refused at once.
  const client = new AtlasClient({ baseUrl: 'http://127.0.0.1:1', token: 'x', reconnect: { ...FAST, maxAttempts: 3 } })
  t.teardown(() => { client.close() })
  const seen = record(client)
  const started = new TaskStore(client, 'red').start()
  client.connect()
  const err = await rejectionOf(started)
  t.match(err, { code: 'retries_exhausted' })
  t.ok(err instanceof AtlasClientError)
  t.equal(seen.disconnects.length, 4, 'the first attempt and three retries')
  t.same(seen.disconnects.map((d) => d.willReconnect), [true, true, true, false])
  t.same(seen.stopped.map((s) => s.code), ['retries_exhausted'])
  t.equal(client.state, 'closed')
})

t.test('close() settles what waits on the client: start() rejects, an accepted mutation resolves', async (t) => {
  // A dead server that is retried forever: only close() can end the wait.
  const lost = new AtlasClient({ baseUrl: 'http://127.0.0.1:1', token: 'x', reconnect: FAST })
  const waiting = new TaskStore(lost, 'red').start()
  lost.connect()
  await nextEvent(lost, 'reconnect')
  lost.close()
  t.match(await rejectionOf(waiting), { code: 'closed' })

  // A mutation the server took waits for its event; closing the client means it will never come.
  const instance = await startInstance(t, { databasePath: join(t.testdir(), 'atlas.db') })
  const control = controlledWebSocket()
  const client = new AtlasClient({ baseUrl: instance.baseUrl, token: await tokenFor('alice', ['red']), WebSocket: control.WebSocket })
  t.teardown(() => { client.close() })
  client.connect()
  const store = new TaskStore(client, 'red')
  await store.start()
  control.deafen()
  const created = store.create({ title: 'taken, event unheard' })
  // The server took it (its event is out); whether its HTTP answer is in yet or not, closing settles it.
  await control.arrived('the event', (f) => f.type === 'task.created')
  client.close()
  const outcome = await Promise.race([created, new Promise<'pending'>((resolve) => setTimeout(() => { resolve('pending') }, 5000))])
  t.not(outcome, 'pending', 'the mutation settled')
  t.match(outcome, { ok: true, kind: 'create', task: { title: 'taken, event unheard', version: 1 } })
  t.match(store.tasks, [{ title: 'taken, event unheard' }], 'the server\'s task, from its answer')
})

t.test('token and getToken together are refused; a function as token is pointed to getToken', async (t) => {
  t.throws(() => new AtlasClient({ baseUrl: 'http://127.0.0.1:1', token: 'a', getToken: () => 'b' }), /token or getToken, not both/)
  t.throws(() => new AtlasClient({ baseUrl: 'http://127.0.0.1:1', token: (() => 'a') as unknown as string }), /pass a function as getToken/)
})
