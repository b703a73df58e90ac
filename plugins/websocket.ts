import fp from 'fastify-plugin'
import { STATUS_CODES } from 'node:http'
import type { FastifyPluginAsync, FastifyReply } from 'fastify'
import { parseConnectQuery } from '../lib/frame-parser.js'
import { RealtimeServer } from '../lib/realtime-server.js'
import { requireTeam } from './auth.js'
import { checkPositiveInteger, checkString, optionError } from './options.js'

export interface AtlasWebSocketOptions {
  /** Route of the WebSocket endpoint (default `/realtime`). */
  path?: string
  /** Unsent bytes a socket may queue before it is closed with 4008 (default 1 MiB). */
  maxBufferedBytes?: number
  /** Interval of protocol pings; a socket that misses one round is dropped (default 30000 ms). */
  heartbeatMs?: number
  /** Invalid frames answered with error frames before the socket is closed with 1008 (default 20). */
  maxInvalidFrames?: number
  /** How long a cut-off slow socket gets for its close frame before it is destroyed (default 2000 ms). */
  closeGraceMs?: number
  /** Client frames per second per connection, steady rate; excess frames get `rate_limited` (default 20). */
  maxFramesPerSecond?: number
  /** Client frames a connection may send at once above the steady rate (default 100). */
  frameBurst?: number
  /** Bytes of replayed events per minute per user on this instance (shared by the user's connections); a resume beyond it gets `resync` `replay_limited` (default 32 MiB). */
  replayBytesPerMinute?: number
  /** Open connections this instance accepts; the next upgrade gets 503 (default 20000). */
  maxConnections?: number
  /** Open connections of one user on this instance; the next upgrade gets 429 (default 32). */
  maxConnectionsPerUser?: number
  /** At shutdown, how long sockets get to answer the 1001 close frame before they are destroyed (default 5000 ms). */
  shutdownGraceMs?: number
  /**
   * Origins (`https://app.example.com`) whose pages may open the socket, besides the server's own
   * origin; `['*']` allows every origin. Upgrades from any other origin get 403. Clients that
   * send no Origin header (not browsers) are always allowed (default: none, same origin only).
   */
  allowedOrigins?: readonly string[]
}

/** The defaults, in one place. */
export const WEBSOCKET_DEFAULTS = {
  path: '/realtime',
  maxBufferedBytes: 1024 * 1024,
  heartbeatMs: 30_000,
  maxInvalidFrames: 20,
  closeGraceMs: 2000,
  maxFramesPerSecond: 20,
  frameBurst: 100,
  replayBytesPerMinute: 32 * 1024 * 1024,
  maxConnections: 20_000,
  maxConnectionsPerUser: 32,
  shutdownGraceMs: 5000,
  allowedOrigins: [] as readonly string[]
} as const

declare module 'fastify' {
  interface FastifyInstance {
    /** The live WebSocket connections of this instance. */
    atlasRealtime: RealtimeServer
  }
}

const NAME = 'atlas-websocket'
/** Client frames are small JSON commands; 64 KiB is generous. */
export const RECOMMENDED_MAX_PAYLOAD = 64 * 1024

const websocketPlugin: FastifyPluginAsync<AtlasWebSocketOptions> = async (fastify, options) => {
  checkString(NAME, 'path', options.path, { pattern: /^\// })
  const positive = (name: Exclude<keyof typeof WEBSOCKET_DEFAULTS, 'path' | 'allowedOrigins'>, allowZero = false): number =>
    checkPositiveInteger(NAME, name, options[name], { allowZero }) ?? WEBSOCKET_DEFAULTS[name]
  const realtime = new RealtimeServer(fastify.atlasHub, {
    maxBufferedBytes: positive('maxBufferedBytes'),
    heartbeatMs: positive('heartbeatMs'),
    maxInvalidFrames: positive('maxInvalidFrames', true),
    closeGraceMs: positive('closeGraceMs'),
    maxFramesPerSecond: positive('maxFramesPerSecond'),
    frameBurst: positive('frameBurst'),
    replayBytesPerMinute: positive('replayBytesPerMinute'),
    maxConnections: positive('maxConnections'),
    maxConnectionsPerUser: positive('maxConnectionsPerUser'),
    shutdownGraceMs: positive('shutdownGraceMs', true)
  })
  const originAllowed = originCheck(options.allowedOrigins ?? WEBSOCKET_DEFAULTS.allowedOrigins)
  // A refused upgrade is told when to try again: by then a heartbeat round has dropped dead sockets.
  const retryAfter = String(Math.ceil(positive('heartbeatMs') / 1000))
  const maxPayload = fastify.websocketServer.options.maxPayload ?? 0
  if (maxPayload === 0 || maxPayload > RECOMMENDED_MAX_PAYLOAD) {
    // Only happens when the integrator registered @fastify/websocket without maxPayload:
    // ws's default lets a client make the server buffer 100 MiB per frame.
    const limit = maxPayload === 0 ? 'of any size' : `up to ${maxPayload} bytes`
    fastify.log.warn({ maxPayload }, `atlas: @fastify/websocket accepts frames ${limit}; set options.maxPayload (e.g. ${RECOMMENDED_MAX_PAYLOAD})`)
  }
  fastify.decorate('atlasRealtime', realtime)
  // preClose, not onClose: clients get their 1001 while the hub can still finish publishing.
  fastify.addHook('preClose', async () => { await realtime.close() })

  // What preValidation parsed, handed to the socket handler without parsing twice.
  const connectQueries = new WeakMap<object, { teams: string[] | undefined, since: Map<string, number> }>()

  fastify.get(options.path ?? WEBSOCKET_DEFAULTS.path, {
    websocket: true,
    // Runs before the upgrade: a refused request gets a real HTTP status and no socket opens.
    // Cheapest checks first: a foreign page or a full instance costs no authentication.
    preValidation: async (request, reply) => {
      if (!originAllowed(request.headers.origin, request.host)) {
        return await refuse(reply, 403, 'FORBIDDEN_ORIGIN', `Origin ${String(request.headers.origin).slice(0, 200)} may not open this socket`)
      }
      if (realtime.refusal() !== undefined) {
        return await refuse(reply.header('retry-after', retryAfter), 503, 'SERVER_FULL', 'This instance is at its connection limit; try again later')
      }
      const principal = await fastify.atlasRequirePrincipal(request, reply)
      if (principal === null) return reply
      const query = parseConnectQuery(request.query as Record<string, unknown>)
      if (!query.ok) return await refuse(reply, 400, 'INVALID_QUERY', query.message)
      for (const teamId of query.teams ?? []) {
        if (!await requireTeam(principal, teamId, reply)) return reply
      }
      if (realtime.refusal(principal) !== undefined) {
        return await refuse(reply.header('retry-after', retryAfter), 429, 'TOO_MANY_CONNECTIONS', `At most ${positive('maxConnectionsPerUser')} connections per user on this instance`)
      }
      connectQueries.set(request, query)
    }
  }, (socket, request) => {
    // @fastify/websocket routed the upgrade through a ServerResponse assigned to the socket and
    // never detached: request, reply, headers and token would live as long as the connection.
    const raw = request.raw.socket as import('node:net').Socket & { _httpMessage?: import('node:http').ServerResponse | null }
    raw._httpMessage?.detachSocket(raw)
    // Its per-socket 'error' listener closes over request and reply for the same reason; the
    // ClientConnection attaches its own right away.
    socket.removeAllListeners('error')
    const principal = request.atlasPrincipal
    const query = connectQueries.get(request)
    if (principal === null || query === undefined) return socket.terminate()
    realtime.accept(socket, principal, query.teams ?? principal.teams, query.since)
  })
}

async function refuse (reply: FastifyReply, statusCode: number, code: string, message: string): Promise<FastifyReply> {
  return await reply.code(statusCode).send({ statusCode, code, error: STATUS_CODES[statusCode] ?? 'Error', message })
}

/**
 * The Origin rule: no Origin header (not a browser), the server's own origin, or a listed one.
 * Browsers send cookies with a WebSocket upgrade to any site, so without this check a page on
 * another origin could open the socket with the user's session (cross-site WebSocket hijacking).
 */
function originCheck (allowed: readonly string[]): (origin: string | undefined, host: string) => boolean {
  if (!Array.isArray(allowed) || !allowed.every((o) => typeof o === 'string')) {
    throw optionError(NAME, `option allowedOrigins must be an array of origins (got ${JSON.stringify(allowed)})`)
  }
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
  dependencies: ['@fastify/websocket', 'atlas-hub', 'atlas-auth']
})
export default atlasWebSocket
