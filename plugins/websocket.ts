import fp from 'fastify-plugin'
import type { FastifyPluginAsync } from 'fastify'
import { parseConnectQuery } from '../lib/protocol.js'
import { RealtimeServer } from '../lib/realtime-server.js'
import { requireTeam } from './auth.js'
import { checkPositiveInteger, checkString } from './options.js'

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
}

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
  const realtime = new RealtimeServer(fastify.atlasHub, {
    maxBufferedBytes: checkPositiveInteger(NAME, 'maxBufferedBytes', options.maxBufferedBytes) ?? 1024 * 1024,
    heartbeatMs: checkPositiveInteger(NAME, 'heartbeatMs', options.heartbeatMs) ?? 30_000,
    maxInvalidFrames: checkPositiveInteger(NAME, 'maxInvalidFrames', options.maxInvalidFrames, { allowZero: true }) ?? 20,
    closeGraceMs: checkPositiveInteger(NAME, 'closeGraceMs', options.closeGraceMs) ?? 2000
  })
  const maxPayload = fastify.websocketServer.options.maxPayload ?? 0
  if (maxPayload === 0 || maxPayload > RECOMMENDED_MAX_PAYLOAD) {
    // Only happens when the integrator registered @fastify/websocket without maxPayload:
    // ws's default lets a client make the server buffer 100 MiB per frame.
    const limit = maxPayload === 0 ? 'of any size' : `up to ${maxPayload} bytes`
    fastify.log.warn({ maxPayload }, `atlas: @fastify/websocket accepts frames ${limit}; set options.maxPayload (e.g. ${RECOMMENDED_MAX_PAYLOAD})`)
  }
  fastify.decorate('atlasRealtime', realtime)
  // preClose, not onClose: clients get their 1001 while the hub can still finish publishing.
  fastify.addHook('preClose', async () => { realtime.close() })

  // What preValidation parsed, handed to the socket handler without parsing twice.
  const connectQueries = new WeakMap<object, { teams: string[] | undefined, since: Map<string, number> }>()

  fastify.get(options.path ?? '/realtime', {
    websocket: true,
    // Runs before the upgrade: a refused request gets a real HTTP status and no socket opens.
    preValidation: async (request, reply) => {
      const principal = await fastify.atlasRequirePrincipal(request, reply)
      if (principal === null) return reply
      const query = parseConnectQuery(request.query as Record<string, unknown>)
      if (!query.ok) return reply.code(400).send({ statusCode: 400, code: 'INVALID_QUERY', error: 'Bad Request', message: query.message })
      for (const teamId of query.teams ?? []) {
        if (!await requireTeam(principal, teamId, reply)) return reply
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

export const atlasWebSocket = fp(websocketPlugin, {
  fastify: '5.x',
  name: NAME,
  dependencies: ['@fastify/websocket', 'atlas-hub', 'atlas-auth']
})
export default atlasWebSocket
