import fp from 'fastify-plugin'
import type { FastifyPluginAsync, FastifyReply } from 'fastify'
import { upgradeRefused } from '../lib/diagnostics.js'
import { ForbiddenOriginError, InvalidQueryError, ServerFullError, TooManyConnectionsError } from '../lib/errors.js'
import { parseConnectQuery } from '../lib/frame-parser.js'
import { RealtimeServer } from '../lib/realtime-server.js'
import { forbiddenTeamError } from './auth.js'
import { CloseCode, SUBPROTOCOL } from '../protocol/constants.js'
import { sendError } from './send-error.js'
import { Type } from '@sinclair/typebox'
import { group, integer, optionError, optionsChecker, string, stringList, type OptionsOf } from './options.js'

export const AtlasWebSocketOptionsSchema = group({
  path: Type.Optional(string({ pattern: /^\//, default: '/realtime', description: 'Route of the WebSocket endpoint.' })),
  maxBufferedBytes: Type.Optional(integer({
    default: 1024 * 1024,
    defaultNote: '1 MiB',
    description: 'Unsent bytes a socket may queue before it is closed with 4008 (slow consumer).'
  })),
  heartbeatMs: Type.Optional(integer({ default: 30_000, description: 'Interval of protocol pings, in ms; a socket that misses a round is dropped.' })),
  maxInvalidFrames: Type.Optional(integer({
    allowZero: true,
    default: 20,
    description: 'Invalid frames answered with error frames before the socket is closed with 1008 (`0`: the first one closes it).'
  })),
  closeGraceMs: Type.Optional(integer({ default: 2000, description: 'How long, in ms, a cut-off slow socket gets to take its close frame before it is destroyed.' })),
  maxFramesPerSecond: Type.Optional(integer({
    default: 20,
    description: 'Client frames per second per connection, steady rate (a token bucket). A frame beyond it is answered with an `rate_limited` error frame and counts as invalid, so a flood ends with 1008.'
  })),
  frameBurst: Type.Optional(integer({
    default: 100,
    description: 'Client frames a connection may send at once above the steady rate (the bucket\'s size): enough for one `subscribe` per team for 100 teams.'
  })),
  maxRefreshesPerMinute: Type.Optional(integer({
    default: 10,
    description: '`refresh` frames one connection may send per minute (a token bucket of this size). A client refreshes once per credential lifetime; beyond it a `refresh` is answered `rate_limited` and counts as invalid. (Guessing is bounded elsewhere: a refused refresh closes the socket and counts as a failed authentication of its address, see `maxFailedAuthPerIp`.)'
  })),
  replayBytesPerMinute: Type.Optional(integer({
    default: 32 * 1024 * 1024,
    defaultNote: '32 MiB',
    description: 'Bytes of replayed events one user may receive per minute on this instance (a token bucket shared by the user\'s connections, so reconnecting does not refill it). A resume beyond it gets `resync` with reason `replay_limited` instead of the rest of its events (from the page where the budget ran out).'
  })),
  maxConnections: Type.Optional(integer({
    default: 20_000,
    description: 'Open connections on this instance; the next upgrade gets `503` `SERVER_FULL` with `Retry-After`.'
  })),
  maxConnectionsPerUser: Type.Optional(integer({
    default: 32,
    description: 'Open connections of one user (the principal\'s `userId`) on this instance; the next upgrade gets `429` `TOO_MANY_CONNECTIONS` with `Retry-After`.'
  })),
  shutdownGraceMs: Type.Optional(integer({
    allowZero: true,
    default: 5000,
    description: 'At shutdown every socket gets close code 1001; those that have not answered after this many ms are destroyed (without it, ws waits 30 s for each).'
  })),
  allowedOrigins: Type.Optional(stringList({
    default: [],
    expected: 'an array of origins',
    description: 'Origins (`\'https://app.example.com\'`) whose pages may open the socket besides the server\'s own origin (the `Origin` header\'s host equals the request\'s `Host`); `[\'*\']`: any. Other origins get `403` `FORBIDDEN_ORIGIN` before authentication. Requests without `Origin` (not browsers) are always let in.'
  }))
}, { $id: 'AtlasWebSocketOptions', description: 'Options of atlasWebSocket.' })

export type AtlasWebSocketOptions = OptionsOf<typeof AtlasWebSocketOptionsSchema>

declare module 'fastify' {
  interface FastifyInstance {
    /** The live WebSocket connections of this instance. */
    atlasConnections: RealtimeServer
  }
}

const NAME = 'atlas-websocket'
/** Revocations recorded during one upgrade's authentication, read at most (there are none, nearly always). */
const REVOCATIONS_READ = 1000
/** Client frames are small JSON commands; 64 KiB is generous. */
export const RECOMMENDED_MAX_PAYLOAD = 64 * 1024

const checkOptions = optionsChecker(NAME, AtlasWebSocketOptionsSchema)

const websocketPlugin: FastifyPluginAsync<AtlasWebSocketOptions> = async (fastify, rawOptions) => {
  const { path, allowedOrigins, ...limits } = checkOptions(rawOptions)
  const realtime = new RealtimeServer(fastify.atlasHub, {
    ...limits,
    checkToken: fastify.atlasCheckToken,
    logger: fastify.log.child({ instance: fastify.atlasBroker.instanceId }),
    instance: fastify.atlasBroker.instanceId
  })
  const originAllowed = originCheck(allowedOrigins)
  // A refused upgrade is told when to try again: by then a heartbeat round has dropped dead sockets.
  const retryAfter = String(Math.ceil(limits.heartbeatMs / 1000))
  const maxPayload = fastify.websocketServer.options.maxPayload ?? 0
  if (maxPayload === 0 || maxPayload > RECOMMENDED_MAX_PAYLOAD) {
    // Only happens when the integrator registered @fastify/websocket without maxPayload:
    // ws's default lets a client make the server buffer 100 MiB per frame.
    const limit = maxPayload === 0 ? 'of any size' : `up to ${maxPayload} bytes`
    fastify.log.warn({ maxPayload }, `atlas: @fastify/websocket accepts frames ${limit}; set options.maxPayload (e.g. ${RECOMMENDED_MAX_PAYLOAD})`)
  }
  fastify.decorate('atlasConnections', realtime)
  // preClose, not onClose: clients get their 1001 while the hub can still finish publishing.
  fastify.addHook('preClose', async () => { await realtime.close() })

  // What preValidation parsed, handed to the socket handler without parsing twice.
  const connectQueries = new WeakMap<object, { teams: string[] | undefined, since: Map<string, number>, revocationMark: number }>()
  // Refusals told by close code, for the socket handler.
  const refusals = new WeakMap<object, { code: number, reason: string }>()
  const refused = (statusCode: number, code: string): void => {
    if (upgradeRefused.hasSubscribers) upgradeRefused.publish({ instance: fastify.atlasBroker.instanceId, statusCode, code })
  }
  const refuse = async (reply: FastifyReply, error: { statusCode: number, code: string, message: string }): Promise<FastifyReply> => {
    refused(error.statusCode, error.code)
    return await sendError(reply, error)
  }

  fastify.get(path, {
    websocket: true,
    // Runs before the upgrade: a refused request gets a real HTTP status and no socket opens.
    // Cheapest checks first: a foreign page or a full instance costs no authentication.
    preValidation: async (request, reply) => {
      if (!originAllowed(request.headers.origin, request.host)) {
        return await refuse(reply, new ForbiddenOriginError(String(request.headers.origin)))
      }
      if (realtime.refusal() !== undefined) {
        return await refuse(reply.header('retry-after', retryAfter), new ServerFullError())
      }
      // Revocations recorded from here on, while the credential is checked, reach this socket
      // when it is accepted: atlasRevocations applies them only to sockets already open.
      const revocationMark = await fastify.taskRepository.lastRevocationId()
      const resolved = await fastify.atlasResolvePrincipal(request)
      // A browser sees a refused upgrade only as 1006: a client that speaks the protocol gets
      // the refusal as a close code after the handshake, so it can stop retrying a bad credential.
      const tellByClose = offersSubprotocol(request.headers['sec-websocket-protocol'])
      if (resolved.principal === undefined) {
        if (tellByClose && resolved.refusal.statusCode === 401) {
          refusals.set(request, { code: CloseCode.UNAUTHORIZED, reason: `unauthorized: ${resolved.refusal.message}` })
          refused(401, resolved.refusal.code)
          return
        }
        return await refuse(reply.headers(resolved.headers), resolved.refusal)
      }
      const principal = resolved.principal
      const query = parseConnectQuery(request.query as Record<string, unknown>)
      if (!query.ok) return await refuse(reply, new InvalidQueryError(query.message))
      const foreign = query.teams?.find((teamId) => !principal.teams.includes(teamId))
      if (foreign !== undefined) {
        if (tellByClose) {
          refusals.set(request, { code: CloseCode.FORBIDDEN, reason: `forbidden_team: ${foreign}` })
          refused(403, 'FORBIDDEN_TEAM')
          return
        }
        return await refuse(reply, forbiddenTeamError(fastify, foreign))
      }
      if (realtime.refusal(principal) !== undefined) {
        return await refuse(reply.header('retry-after', retryAfter), new TooManyConnectionsError(limits.maxConnectionsPerUser))
      }
      connectQueries.set(request, { ...query, revocationMark })
    }
  }, (socket, request) => {
    // @fastify/websocket routed the upgrade through a ServerResponse assigned to the socket and
    // never detached: request, reply, headers and token would live as long as the connection.
    const raw = request.raw.socket as import('node:net').Socket & { _httpMessage?: import('node:http').ServerResponse | null }
    raw._httpMessage?.detachSocket(raw)
    // Its per-socket 'error' listener closes over request and reply for the same reason; the
    // ClientConnection attaches its own right away.
    socket.removeAllListeners('error')
    const refusal = refusals.get(request)
    if (refusal !== undefined) return socket.close(refusal.code, closeReason(refusal.reason))
    const principal = request.atlasPrincipal
    const query = connectQueries.get(request)
    if (principal === null || query === undefined) return socket.terminate()
    const connection = realtime.accept(socket, principal, query.teams ?? principal.teams, query.since, request.ip)
    if (connection === undefined) return
    fastify.taskRepository.revocationsAfter(query.revocationMark, REVOCATIONS_READ).then((revoked) => {
      for (const { userId, teamId } of revoked) {
        if (userId !== principal.userId) continue
        if (teamId === null) connection.close(CloseCode.REVOKED, 'revoked')
        else connection.revokeTeam(teamId)
      }
    }, (err: unknown) => {
      // Unknown whether this credential was revoked meanwhile: the client comes back later.
      fastify.log.warn({ err }, 'atlas: reading revocations failed; connection closed')
      connection.close(CloseCode.TRY_AGAIN_LATER, 'try again later')
    })
  })
}

/** Whether the upgrade offers the protocol's subprotocol (a client that understands its close codes). */
function offersSubprotocol (header: string | undefined): boolean {
  return header !== undefined && header.split(',').some((entry) => entry.trim() === SUBPROTOCOL)
}

/** A close reason fits in 123 bytes of UTF-8 (RFC 6455 §5.5); a longer host message is cut at a character. */
function closeReason (reason: string): string {
  if (Buffer.byteLength(reason) <= 123) return reason
  let cut = reason.slice(0, 123)
  while (Buffer.byteLength(cut) > 120) cut = cut.slice(0, -1)
  return `${cut.replace(/[\uD800-\uDBFF]$/, '')}…`
}

/**
 * The Origin rule: no Origin header (not a browser), the server's own origin, or a listed one.
 * Browsers send cookies with a WebSocket upgrade to any site, so without this check a page on
 * another origin could open the socket with the user's session (cross-site WebSocket hijacking).
 */
function originCheck (allowed: readonly string[]): (origin: string | undefined, host: string) => boolean {
  if (allowed.includes('*')) return () => true
  const listed = new Set(allowed.map((origin) => {
    const parsed = URL.canParse(origin) ? new URL(origin) : undefined
    if (parsed === undefined || parsed.origin === 'null') throw optionError(NAME, `option allowedOrigins: ${JSON.stringify(origin)} is not an origin like https://app.example.com`)
    return parsed.origin
  }))
  return (origin, host) => {
    if (origin === undefined) return true
    if (!URL.canParse(origin)) return false
    const parsed = new URL(origin)
    return parsed.host === host.toLowerCase() || listed.has(parsed.origin)
  }
}

export const atlasWebSocket = fp(websocketPlugin, {
  fastify: '5.x',
  name: NAME,
  dependencies: ['@fastify/websocket', 'atlas-hub', 'atlas-auth', 'atlas-broker', 'atlas-repository']
})
export default atlasWebSocket
