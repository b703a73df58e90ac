/**
 * Issue #12, points 1, 4 and 7: where the server finds a credential (the Authorization header,
 * the browser's subprotocol entry, the `access_token` parameter, in that order), how a client
 * that speaks the protocol is told a refusal (a close code it can see, not an HTTP status a
 * browser reports as 1006), the host's own wording of 401 and 403, and Fastify's `prefix`.
 */
import t from 'tap'
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import { WebSocket } from 'ws'
import { accessTokenOf, atlasRealtime, type AtlasRealtimeOptions } from '../plugins/index.js'
import { BEARER_SUBPROTOCOL_PREFIX, SUBPROTOCOL } from '../protocol/constants.js'
import { api, listenInstance, type Instance } from './helpers/app.js'
import { upgradeRequest } from './helpers/ws-client.js'

/** A token that is not base64url itself: `=`, `/`, `+`, a space and non-ASCII must all survive. */
const ODD_TOKEN = 'sk/+= ünïcode-✓'

interface Recorded { tokens: Array<string | undefined>, protocolHeaders: Array<string | undefined> }

/** An app whose authenticate accepts the token `good` (any team id in `teams:` after it) and records what it saw. */
async function recordingApp (t: { testdir (): string }, options: Partial<AtlasRealtimeOptions> = {}, logLines?: string[]): Promise<{ app: FastifyInstance, recorded: Recorded }> {
  const recorded: Recorded = { tokens: [], protocolHeaders: [] }
  const logger = logLines === undefined ? false : { level: 'trace', stream: { write: (line: string) => { logLines.push(line) } } }
  const app = Fastify({ logger })
  await app.register(atlasRealtime, {
    database: { databasePath: `${t.testdir()}/atlas.db` },
    authenticate: (request: FastifyRequest) => {
      const token = accessTokenOf(request)
      recorded.tokens.push(token)
      recorded.protocolHeaders.push(request.headers['sec-websocket-protocol'])
      return token === 'good' || token === ODD_TOKEN ? { userId: 'alice', teams: ['red'] } : null
    },
    ...options
  })
  return { app, recorded }
}

/** Registers the suite on a fresh instance and waits until it is ready (where option errors surface). */
async function registered (options: AtlasRealtimeOptions): Promise<void> {
  const app = Fastify()
  try {
    await app.register(atlasRealtime, options)
    await app.ready()
  } finally {
    await app.close()
  }
}

function bearerEntry (token: string): string {
  return BEARER_SUBPROTOCOL_PREFIX + Buffer.from(token, 'utf8').toString('base64url')
}

interface Outcome { opened: boolean, protocol: string, code?: number, reason?: string, status?: number, headers?: Record<string, unknown>, body?: any, firstFrame?: any }

/** Opens a socket with `ws` and reports how it ended: a close code, or the refused upgrade's status. */
async function attempt (url: string, protocols: string[], headers: Record<string, string> = {}): Promise<Outcome> {
  return await new Promise((resolve) => {
    const socket = new WebSocket(url, protocols, { headers })
    let firstFrame: unknown
    socket.once('message', (data) => { firstFrame = JSON.parse(String(data)) })
    socket.once('unexpected-response', (_request, response) => {
      let text = ''
      response.setEncoding('utf8').on('data', (chunk: string) => { text += chunk }).once('end', () => {
        resolve({ opened: false, protocol: '', status: response.statusCode, headers: response.headers, body: JSON.parse(text) })
      })
    })
    socket.once('close', (code, reason) => { resolve({ opened: true, protocol: socket.protocol, code, reason: reason.toString(), firstFrame }) })
    socket.once('open', () => {
      // A welcome means it was accepted: close it ourselves and report what was selected.
      socket.once('message', () => { socket.close(1000) })
    })
    socket.on('error', () => {})
  })
}

t.test('the credential is read from the header, then the subprotocol entry, then access_token', async (t) => {
  const { app, recorded } = await recordingApp(t)
  const instance = await listenInstance(t, app)
  const url = (query = ''): string => `${instance.wsUrl}${query}`

  const cases: Array<[string, Parameters<typeof attempt>, string | undefined]> = [
    ['header alone', [url(), [], { authorization: 'Bearer good' }], 'good'],
    ['the scheme in any case', [url(), [], { authorization: 'bearer good' }], 'good'],
    ['subprotocol entry alone (base64url of UTF-8)', [url(), [SUBPROTOCOL, bearerEntry(ODD_TOKEN)]], ODD_TOKEN],
    ['access_token alone', [url('?access_token=good'), []], 'good'],
    ['header before subprotocol and access_token', [url('?access_token=q'), [SUBPROTOCOL, bearerEntry('s')], { authorization: 'Bearer good' }], 'good'],
    ['subprotocol before access_token', [url('?access_token=q'), [SUBPROTOCOL, bearerEntry('good')]], 'good'],
    ['a non-Bearer Authorization is no bearer credential', [url('?access_token=good'), [], { authorization: 'Basic YWxpY2U6eA==' }], 'good'],
    ['two subprotocol entries are ambiguous: none', [url(), [SUBPROTOCOL, bearerEntry('good'), bearerEntry('other')]], undefined],
    ['an entry that is not base64url: none', [url(), [SUBPROTOCOL, `${BEARER_SUBPROTOCOL_PREFIX}a.b`]], undefined]
  ]
  for (const [name, args, expected] of cases) {
    recorded.tokens.length = 0
    recorded.protocolHeaders.length = 0
    await attempt(...args)
    t.same(recorded.tokens, [expected], `${name}: accessTokenOf gives ${String(expected)}`)
    // The credential entry never reaches the host, the router or ws (which could echo it).
    t.notOk(recorded.protocolHeaders[0]?.includes(BEARER_SUBPROTOCOL_PREFIX), `${name}: the entry was taken out of the request`)
  }

  // A plain HTTP request: only the header counts; the URL's token was dropped.
  recorded.tokens.length = 0
  t.equal((await api(instance.baseUrl, 'GET', '/teams/red/tasks?access_token=good')).status, 401)
  t.equal((await api(instance.baseUrl, 'GET', '/teams/red/tasks', { token: 'good' })).status, 200)
  t.same(recorded.tokens, [undefined, 'good'])
})

t.test('a browser-style upgrade: atlas.v1 selected, the credential entry neither echoed nor logged', async (t) => {
  const lines: string[] = []
  const { app } = await recordingApp(t, {}, lines)
  const instance = await listenInstance(t, app)
  const entry = bearerEntry(ODD_TOKEN)
  const raw = await upgradeRequest(instance.wsUrl, { 'sec-websocket-protocol': `${SUBPROTOCOL}, ${entry}` })
  t.ok(raw.upgraded, 'switched')
  if (raw.upgraded) raw.socket.destroy()
  const accepted = await attempt(instance.wsUrl, [SUBPROTOCOL, entry])
  t.equal(accepted.protocol, SUBPROTOCOL, 'the server selected atlas.v1')
  t.match(accepted.firstFrame, { type: 'welcome', userId: 'alice' })
  // Offered after another protocol, atlas.v1 is still the one selected.
  t.equal((await attempt(instance.wsUrl, ['x-other', SUBPROTOCOL, entry])).protocol, SUBPROTOCOL)
  await app.close()
  const leaking = lines.filter((line) => line.includes(entry.slice(BEARER_SUBPROTOCOL_PREFIX.length)) || line.includes(ODD_TOKEN))
  t.same(leaking, [], 'no log line carries the credential')
})

t.test('a client offering atlas.v1 learns a refusal by close code; others get the HTTP status', async (t) => {
  const { app } = await recordingApp(t)
  const instance = await listenInstance(t, app)

  const unauthorized = await attempt(instance.wsUrl, [SUBPROTOCOL, bearerEntry('bad')])
  t.match(unauthorized, { opened: true, code: 4001, reason: 'unauthorized: A valid access token is required' }, 'refused credential: 4001 after the handshake')
  t.equal(unauthorized.firstFrame, undefined, 'no welcome before it')
  const none = await attempt(instance.wsUrl, [SUBPROTOCOL])
  t.match(none, { opened: true, code: 4001 }, 'no credential at all: 4001')

  const forbidden = await attempt(`${instance.wsUrl}?teams=red,blue`, [SUBPROTOCOL, bearerEntry('good')])
  t.match(forbidden, { opened: true, code: 4003, reason: 'forbidden_team: blue' }, 'a foreign team in the URL: 4003')

  const plain = await attempt(instance.wsUrl, [], { authorization: 'Bearer bad' })
  t.match(plain, { opened: false, status: 401, body: { code: 'UNAUTHORIZED' } }, 'without atlas.v1: HTTP 401 as before')
  t.equal(plain.headers?.['www-authenticate'], 'Bearer')
  const plainForbidden = await attempt(`${instance.wsUrl}?teams=blue`, [], { authorization: 'Bearer good' })
  t.match(plainForbidden, { opened: false, status: 403, body: { code: 'FORBIDDEN_TEAM' } })
  t.equal(instance.app.atlasConnections.connectionCount, 0, 'no refused socket was counted as a connection')
})

t.test('the 401 and 403 bodies and WWW-Authenticate are the host\'s to word', async (t) => {
  const { app } = await recordingApp(t, {
    auth: { unauthorizedMessage: 'Send your X-Api-Key header', wwwAuthenticate: 'ApiKey realm="atlas"', forbiddenTeamMessage: 'You are not in {teamId}; ask an admin' }
  })
  const instance = await listenInstance(t, app)
  const refused = await api(instance.baseUrl, 'GET', '/teams/red/tasks')
  t.equal(refused.status, 401)
  t.same(refused.body, { statusCode: 401, code: 'UNAUTHORIZED', error: 'Unauthorized', message: 'Send your X-Api-Key header' })
  t.equal(refused.headers.get('www-authenticate'), 'ApiKey realm="atlas"')
  const forbidden = await api(instance.baseUrl, 'GET', '/teams/blue/tasks', { token: 'good' })
  t.same(forbidden.body, { statusCode: 403, code: 'FORBIDDEN_TEAM', error: 'Forbidden', message: 'You are not in blue; ask an admin' })
  const upgrade = await attempt(instance.wsUrl, [], {})
  t.match(upgrade, { status: 401, body: { message: 'Send your X-Api-Key header' } })
  t.match(await attempt(instance.wsUrl, [SUBPROTOCOL]), { code: 4001, reason: 'unauthorized: Send your X-Api-Key header' })
  const upgradeForbidden = await attempt(`${instance.wsUrl}?teams=blue`, [], { authorization: 'Bearer good' })
  t.match(upgradeForbidden, { status: 403, body: { message: 'You are not in blue; ask an admin' } })

  // Cookie sessions have no standard challenge: '' sends none.
  const { app: cookieApp } = await recordingApp(t, { auth: { wwwAuthenticate: '' } })
  const cookie = await listenInstance(t, cookieApp)
  const noChallenge = await api(cookie.baseUrl, 'GET', '/teams/red/tasks')
  t.equal(noChallenge.status, 401)
  t.equal(noChallenge.headers.get('www-authenticate'), null)

  // A header value cannot split the response.
  await t.rejects(registered({
    database: { databasePath: `${t.testdir()}/bad.db` },
    authenticate: () => null,
    auth: { wwwAuthenticate: 'Bearer\r\nSet-Cookie: x=1' }
  }), { code: 'ATLAS_ERR_OPTION', message: /wwwAuthenticate/ })
})

t.test('Fastify\'s prefix moves the task routes and the WebSocket, so a client is given one base URL', async (t) => {
  const { app } = await recordingApp(t, { prefix: '/api', websocket: { heartbeatMs: 30_000 } } as Partial<AtlasRealtimeOptions>)
  const instance: Instance = await listenInstance(t, app)
  const apiBase = `${instance.baseUrl}/api`
  t.equal((await api(apiBase, 'POST', '/teams/red/tasks', { token: 'good', body: { title: 'under /api' } })).status, 201)
  t.equal((await api(instance.baseUrl, 'GET', '/teams/red/tasks', { token: 'good' })).status, 404, 'not at the root')
  const socket = new WebSocket(`${apiBase.replace('http', 'ws')}/realtime?teams=red&since=red:0`, [SUBPROTOCOL], { headers: { authorization: 'Bearer good' } })
  const frames: any[] = []
  await new Promise<void>((resolve, reject) => {
    socket.on('message', (data) => {
      frames.push(JSON.parse(String(data)))
      if (frames.some((frame) => frame.type === 'task.created')) resolve()
    })
    socket.once('error', reject)
  })
  socket.close()
  t.match(frames.find((frame) => frame.type === 'task.created'), { seq: 1, task: { title: 'under /api' } }, 'the event reached /api/realtime')
  const root = await upgradeRequest(`${instance.wsUrl}?access_token=good`)
  t.equal(root.upgraded ? 101 : root.status, 404, 'no WebSocket at /realtime')

  // websocket.path and routes.prefix are relative to it.
  const { app: nested } = await recordingApp(t, { prefix: '/api', websocket: { path: '/live' }, routes: { prefix: '/v2' } })
  const nestedInstance = await listenInstance(t, nested)
  t.equal((await api(`${nestedInstance.baseUrl}/api/v2`, 'GET', '/teams/red/tasks', { token: 'good' })).status, 200)
  t.match(await attempt(`${nestedInstance.baseUrl.replace('http', 'ws')}/api/live`, [], { authorization: 'Bearer good' }), { opened: true, protocol: '' })

  // A prefix is checked like every option.
  await t.rejects(registered({ prefix: 'api', database: { databasePath: `${t.testdir()}/p.db` }, authenticate: () => null }), { code: 'ATLAS_ERR_OPTION', message: /prefix/ })
})
