/**
 * Issue #12, point 1 and "the README walks the cookie-session and API-key cases as well as
 * JWT": the three `authenticate` functions of the README's "Using it in an existing Atlas API",
 * as written there, each with the SDK (in Node) connecting, receiving an event, and being
 * refused with a clear, final `unauthorized` when its credential is wrong. Before the issue the
 * README's authenticate read only the Authorization header while the SDK sent the token in the
 * URL: every connection got 401 and the SDK retried forever.
 */
import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import fastifyCookie from '@fastify/cookie'
import { SignJWT, jwtVerify } from 'jose'
import { WebSocket as WsWebSocket } from 'ws'
import { accessTokenOf, atlasRealtime } from '../plugins/index.js'
import { AtlasClient, type AtlasClientOptions, type WebSocketConstructor } from '../client/index.js'
import { listenInstance } from './helpers/app.js'

const SECRET = new TextEncoder().encode('integrator-auth-test-secret')

// The README's "your existing" helpers, made real.
async function verifyJwt (token: string): Promise<{ sub: string, teams: string[], exp: number } | null> {
  try {
    const { payload } = await jwtVerify(token, SECRET)
    return payload as { sub: string, teams: string[], exp: number }
  } catch {
    return null
  }
}
const apiKeys = {
  async lookup (key: string) { return key === 'key-of-alice' ? { userId: 'alice', teamIds: ['red'] } : undefined }
}
const sessionStore = new Map([['s-1', { userId: 'alice', teamIds: ['red'] }]])
const sessions = {
  async get (id: string) { return sessionStore.get(id) }
}

/** Records the credentials-bearing headers of every request the server sees. */
function recordHeaders (app: FastifyInstance): Array<{ url: string, authorization?: string, protocol?: string }> {
  const seen: Array<{ url: string, authorization?: string, protocol?: string }> = []
  app.addHook('onRequest', async (request) => {
    seen.push({ url: request.url, authorization: request.headers.authorization, protocol: request.headers['sec-websocket-protocol'] })
  })
  return seen
}

/** Connects an SDK client to team red, creates a task through it and waits for its event. */
async function roundTrip (t: Test, options: AtlasClientOptions): Promise<AtlasClient> {
  const client = new AtlasClient({ teams: ['red'], reconnect: { maxAttempts: 3 }, ...options })
  t.teardown(() => { client.close() })
  const event = new Promise((resolve) => { client.on('event', resolve) })
  const snapshot = new Promise((resolve) => { client.on('snapshot', resolve) })
  client.connect()
  await snapshot
  await client.api.create('red', { title: 'through the SDK' })
  t.match(await event, { type: 'task.created', teamId: 'red', task: { title: 'through the SDK' } }, 'the event arrived')
  return client
}

/** Connects with a refused credential: the SDK must report unauthorized once and stop. */
async function refused (t: Test, options: AtlasClientOptions): Promise<void> {
  const client = new AtlasClient({ teams: ['red'], reconnect: { maxAttempts: 5, baseMs: 10, capMs: 20 }, ...options })
  t.teardown(() => { client.close() })
  const errors: string[] = []
  client.on('error', ({ code }) => { errors.push(code) })
  const stopped = new Promise((resolve) => { client.on('disconnect', (info) => { if (!info.willReconnect) resolve(info) }) })
  client.connect()
  t.match(await stopped, { code: 4001, willReconnect: false }, 'closed for good with 4001, no endless retry')
  t.same(errors, ['unauthorized'], 'one unauthorized error')
}

t.test('bearer JWTs: the README\'s authenticate with accessTokenOf, the SDK with getToken, under a prefix', async (t) => {
  const app = Fastify()
  const seen = recordHeaders(app)
  await app.register(atlasRealtime, {
    prefix: '/api',
    database: { databasePath: `${t.testdir()}/atlas.db` },
    authenticate: async (request) => {
      const token = accessTokenOf(request)
      const claims = token === undefined ? null : await verifyJwt(token)
      return claims === null ? null : { userId: claims.sub, teams: claims.teams, expiresAt: claims.exp * 1000 }
    }
  })
  const instance = await listenInstance(t, app)
  const jwt = await new SignJWT({ teams: ['red'] }).setProtectedHeader({ alg: 'HS256' }).setSubject('alice').setExpirationTime('1h').sign(SECRET)
  await roundTrip(t, { baseUrl: `${instance.baseUrl}/api`, getToken: async () => jwt })
  const upgrade = seen.find((request) => request.url.startsWith('/api/realtime'))
  t.equal(upgrade?.authorization, `Bearer ${jwt}`, 'Node sends the token as a header on the upgrade')
  t.notOk(seen.some((request) => request.url.includes(jwt)), 'never in a URL')
  await refused(t, { baseUrl: `${instance.baseUrl}/api`, token: `${jwt.slice(0, -2)}xx` })
})

t.test('an API key header: HTTP with X-Api-Key, the SDK with the key as its token', async (t) => {
  const app = Fastify()
  await app.register(atlasRealtime, {
    database: { databasePath: `${t.testdir()}/atlas.db` },
    auth: { unauthorizedMessage: 'An X-Api-Key header is required', wwwAuthenticate: 'ApiKey' },
    authenticate: async (request) => {
      const header = request.headers['x-api-key']
      const key = typeof header === 'string' ? header : accessTokenOf(request)
      const owner = key === undefined ? undefined : await apiKeys.lookup(key)
      return owner === undefined ? null : { userId: owner.userId, teams: owner.teamIds }
    }
  })
  const instance = await listenInstance(t, app)
  const listed = await fetch(`${instance.baseUrl}/teams/red/tasks`, { headers: { 'x-api-key': 'key-of-alice' } })
  t.equal(listed.status, 200, 'the integrator\'s own header works on HTTP')
  const anonymous = await fetch(`${instance.baseUrl}/teams/red/tasks`)
  t.equal(anonymous.status, 401)
  t.equal(anonymous.headers.get('www-authenticate'), 'ApiKey')
  t.equal((await anonymous.json() as { message: string }).message, 'An X-Api-Key header is required')
  await roundTrip(t, { baseUrl: instance.baseUrl, token: 'key-of-alice' })
  // A browser's WebSocket cannot send X-Api-Key: the SDK's subprotocol entry reaches accessTokenOf.
  const browserLike = Object.assign(class extends WsWebSocket {
    constructor (url: string, protocols?: string | string[]) { super(url, protocols) }
  }, { supportsHeaders: false }) as unknown as WebSocketConstructor
  await roundTrip(t, { baseUrl: instance.baseUrl, token: 'key-of-alice', WebSocket: browserLike })
  await refused(t, { baseUrl: instance.baseUrl, token: 'key-of-mallory' })
})

t.test('a signed session cookie: the SDK with no token sends no credential of its own', async (t) => {
  const app = Fastify()
  const seen = recordHeaders(app)
  await app.register(fastifyCookie, { secret: 'integrator-auth-cookie-secret' })
  await app.register(atlasRealtime, {
    database: { databasePath: `${t.testdir()}/atlas.db` },
    auth: { unauthorizedMessage: 'Sign in first', wwwAuthenticate: '' },
    authenticate: async (request) => {
      const cookie = request.cookies.session
      const unsigned = cookie === undefined ? undefined : request.unsignCookie(cookie)
      if (unsigned?.valid !== true || unsigned.value === null) return null
      const session = await sessions.get(unsigned.value)
      return session === undefined ? null : { userId: session.userId, teams: session.teamIds }
    }
  })
  const instance = await listenInstance(t, app)
  // What a browser does by itself: send the page's cookie with every request and the upgrade.
  const withCookie = (value: string): Pick<AtlasClientOptions, 'fetch' | 'WebSocket'> => ({
    fetch: async (input, init) => await fetch(input, { ...init, headers: { ...init?.headers as Record<string, string>, cookie: `session=${value}` } }),
    WebSocket: Object.assign(class extends WsWebSocket {
      constructor (url: string, protocols?: string | string[]) { super(url, protocols, { headers: { cookie: `session=${value}` } }) }
    }, { supportsHeaders: false }) as unknown as WebSocketConstructor
  })
  await roundTrip(t, { baseUrl: instance.baseUrl, ...withCookie(app.signCookie('s-1')) })
  t.ok(seen.length > 0)
  t.same(seen.filter((request) => request.authorization !== undefined), [], 'no Authorization header, not even "Bearer undefined"')
  t.notOk(seen.some((request) => /undefined|access_token/.test(request.url) || request.protocol?.includes('bearer') === true), 'no credential in URL or subprotocol')
  const signedIn = await fetch(`${instance.baseUrl}/teams/red/tasks`)
  t.equal(signedIn.status, 401)
  t.equal(signedIn.headers.get('www-authenticate'), null, 'no challenge for cookies')
  await refused(t, { baseUrl: instance.baseUrl, ...withCookie(`${app.signCookie('s-1')}x`) })
})
