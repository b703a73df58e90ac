import fp from 'fastify-plugin'
import fastifyWebsocket from '@fastify/websocket'
import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import { CloseCode, SUBPROTOCOL } from '../protocol/constants.js'
import { Type } from '@sinclair/typebox'
import { atlasAuth, AtlasAuthOptionsSchema, type AtlasAuthOptions, type Authenticate, type AuthenticateToken } from './auth.js'
import { atlasBroker, AtlasBrokerOptionsSchema, type AtlasBrokerOptions } from './broker.js'
import { atlasCredentials } from './credentials.js'
import { atlasHub, AtlasHubOptionsSchema, type AtlasHubOptions } from './hub.js'
import { atlasRepository, AtlasRepositoryOptionsSchema, type AtlasRepositoryOptions } from './repository.js'
import { atlasTaskRoutes, AtlasTaskRoutesOptionsSchema, type AtlasTaskRoutesOptions } from './task-routes.js'
import { atlasUpgradeGuard } from './upgrade-guard.js'
import { atlasRevocations, type AtlasRevocationsOptions, type RevocationTarget } from './revocations.js'
import { atlasMetrics, AtlasMetricsOptionsSchema, type AtlasMetricsOptions } from './metrics.js'
import { atlasHealth, AtlasHealthOptionsSchema, type AtlasHealthOptions, type Readiness } from './health.js'
import { atlasOverload, AtlasOverloadOptionsSchema, type AtlasOverloadOptions } from './overload.js'
import { atlasAccessLog } from './access-log.js'
import { atlasWebSocket, AtlasWebSocketOptionsSchema, RECOMMENDED_MAX_PAYLOAD, type AtlasWebSocketOptions } from './websocket.js'
import { group, handedOn, integer, optionError, optionsChecker, string, type OptionsOf } from './options.js'

/** The umbrella's own option of the WebSocket group (the others are atlasWebSocket's). */
const WebSocketExtrasSchema = group({
  maxPayload: Type.Optional(integer({
    default: RECOMMENDED_MAX_PAYLOAD,
    defaultNote: '64 KiB',
    description: 'Largest client frame in bytes; larger ones close the socket with 1009. Applies only when the umbrella registers `@fastify/websocket` itself (it does unless the instance already has it).'
  }))
})

export const AtlasRealtimeOptionsSchema = group({
  prefix: Type.Optional(string({
    pattern: /^\/.*[^/]$/,
    defaultText: 'none',
    description: 'Fastify\'s own register option, honoured: the task routes and the WebSocket endpoint go under it (`\'/api\'` gives `/api/teams/:teamId/tasks` and `/api/realtime`; `websocket.path` and `routes.prefix` are then relative to it). Clients are given `https://host/api` as their one base URL.'
  })),
  authenticate: handedOn(AtlasAuthOptionsSchema.properties.authenticate, { description: '`(request) => { userId, teams, expiresAt? } | null | undefined`, sync or async; see [`atlasAuth`](#atlasauth).' }),
  authenticateToken: Type.Optional(handedOn(AtlasAuthOptionsSchema.properties.authenticateToken, { defaultText: 'unset', description: '`(token) => { userId, teams, expiresAt? } | null | undefined`: lets open sockets refresh their credential; see [`atlasAuth`](#atlasauth).' })),
  database: handedOn(AtlasRepositoryOptionsSchema, { description: 'Options of [`atlasRepository`](#atlasrepository).' }),
  broker: Type.Optional(handedOn(AtlasBrokerOptionsSchema, { default: {}, description: 'Options of [`atlasBroker`](#atlasbroker); no `redis`: in-process broker.' })),
  hub: Type.Optional(handedOn(AtlasHubOptionsSchema, { default: {}, description: 'Options of [`atlasHub`](#atlashub).' })),
  websocket: Type.Optional(Type.Intersect([AtlasWebSocketOptionsSchema, WebSocketExtrasSchema], {
    default: {},
    description: 'Options of [`atlasWebSocket`](#atlaswebsocket), plus `maxPayload`.'
  })),
  routes: Type.Optional(Type.Union([AtlasTaskRoutesOptionsSchema, Type.Literal(false)], {
    default: {},
    expected: 'an object or false',
    description: 'Options of [`atlasTaskRoutes`](#atlastaskroutes), or `false` to register no task routes (your own routes still broadcast).'
  })),
  metrics: Type.Optional(Type.Union([AtlasMetricsOptionsSchema, Type.Literal(false)], {
    default: false,
    expected: 'an object or false',
    description: 'Options of [`atlasMetrics`](#atlasmetrics) (`{}`: its defaults, `/metrics`), or `false`: no metrics.'
  })),
  health: Type.Optional(Type.Union([AtlasHealthOptionsSchema, Type.Literal(false)], {
    default: false,
    expected: 'an object or false',
    description: 'Options of [`atlasHealth`](#atlashealth) (`{}`: `/health/live` and `/health/ready`), or `false`: no health routes.'
  })),
  overload: Type.Optional(Type.Union([AtlasOverloadOptionsSchema, Type.Literal(false)], {
    default: false,
    expected: 'an object or false',
    description: 'Options of [`atlasOverload`](#atlasoverload) (`{}`: its defaults), or `false`: no overload protection.'
  })),
  auth: Type.Optional(Type.Omit(AtlasAuthOptionsSchema, ['authenticate', 'authenticateToken'], {
    $id: 'AtlasAuthLimits',
    default: {},
    description: 'Options of [`atlasAuth`](#atlasauth) besides `authenticate` (the failed-authentication limit).'
  }))
}, { $id: 'AtlasRealtimeOptions', description: 'Options of atlasRealtime.' })

export type AtlasRealtimeOptions = Omit<OptionsOf<typeof AtlasRealtimeOptionsSchema>, 'database'> & {
  database: AtlasRepositoryOptions
  hub?: AtlasHubOptions
}

const NAME = 'atlas-realtime'

// Each plugin checks its own options at its registration, naming itself; the umbrella checks its own level.
const checkOptions = optionsChecker(NAME, AtlasRealtimeOptionsSchema, { delegated: ['authenticate', 'authenticateToken', 'database', 'broker', 'hub', 'websocket', 'routes', 'auth', 'metrics', 'health', 'overload'] })
const checkWebSocketExtras = optionsChecker(NAME, WebSocketExtrasSchema, { path: 'websocket' })

/** Registers the whole suite from one options object. */
const atlasRealtimePlugin: FastifyPluginAsync<AtlasRealtimeOptions> = async (fastify, rawOptions) => {
  const options = checkOptions(rawOptions)
  // `auth` takes atlasAuth's other options; one there would be silently overridden by the top level's.
  for (const name of ['authenticate', 'authenticateToken']) {
    if (typeof rawOptions.auth === 'object' && rawOptions.auth !== null && Object.hasOwn(rawOptions.auth, name)) {
      throw optionError(NAME, `option auth.${name} is not an option: give ${name} at the top level`)
    }
  }
  const { maxPayload: givenMaxPayload, ...websocket } = options.websocket as AtlasWebSocketOptions & { maxPayload?: number }
  const { maxPayload } = checkWebSocketExtras({ maxPayload: givenMaxPayload })
  // An fp plugin is not encapsulated, so Fastify applies no prefix to it: the umbrella does.
  const prefix = options.prefix ?? ''
  websocket.path = `${prefix}${websocket.path ?? '/realtime'}`
  const routes = options.routes === false ? false : { ...options.routes, prefix: `${prefix}${options.routes?.prefix ?? ''}` || undefined }
  // First: they act on every request and every route declared after them.
  await fastify.register(atlasCredentials)
  await fastify.register(atlasUpgradeGuard)
  // Checked by atlasRepository itself, exactly one of databasePath and url included.
  await fastify.register(atlasRepository, options.database as AtlasRepositoryOptions)
  await fastify.register(atlasBroker, options.broker)
  await fastify.register(atlasHub, rawOptions.hub ?? {})
  // With Redis, rate-limit counters live there too, so a limit holds across instances.
  const rateLimitRedis = options.broker.redis
  await fastify.register(atlasAuth, { rateLimitRedis, ...options.auth, authenticate: options.authenticate, authenticateToken: options.authenticateToken })
  if (!fastify.hasDecorator('websocketServer')) {
    await fastify.register(fastifyWebsocket, { options: { maxPayload, handleProtocols: atlasHandleProtocols }, preClose: atlasWebSocketPreClose })
  }
  // Before the suite's routes, so its check runs first on their requests; after @fastify/websocket,
  // whose own onRequest hook marks an upgrade (request.ws) so that a refused one's socket is closed.
  if (options.overload !== undefined && options.overload !== false) await fastify.register(atlasOverload, options.overload)
  await fastify.register(atlasWebSocket, websocket)
  await fastify.register(atlasRevocations)
  if (routes !== false) await fastify.register(atlasTaskRoutes, { rateLimitRedis, ...routes })
  if (options.health !== undefined && options.health !== false) await fastify.register(atlasHealth, options.health)
  if (options.metrics !== undefined && options.metrics !== false) await fastify.register(atlasMetrics, options.metrics)
}

/**
 * Selects the protocol's subprotocol (`atlas.v1`) when the client offers it, else the client's
 * first, as ws does by default (a browser that offered any fails a handshake that selects none).
 * Pass it in `options.handleProtocols` when you register @fastify/websocket yourself.
 */
export function atlasHandleProtocols (protocols: Set<string>): string | false {
  if (protocols.has(SUBPROTOCOL)) return SUBPROTOCOL
  const first = protocols.values().next()
  return first.done === true ? false : first.value
}

/**
 * Replaces @fastify/websocket's default preClose, which closes sockets without a code. Pass it
 * as `preClose` when you register @fastify/websocket yourself.
 */
export async function atlasWebSocketPreClose (this: FastifyInstance): Promise<void> {
  for (const client of this.websocketServer.clients) client.close(CloseCode.GOING_AWAY, 'server shutting down')
}

export const atlasRealtime = fp(atlasRealtimePlugin, { fastify: '5.x', name: NAME })
export default atlasRealtime

export { requireTeam } from './auth.js'
export { accessTokenOf } from './credentials.js'
export { atlasAccessLog, atlasAuth, atlasBroker, atlasCredentials, atlasHealth, atlasHub, atlasMetrics, atlasOverload, atlasRepository, atlasRevocations, atlasTaskRoutes, atlasUpgradeGuard, atlasWebSocket }
export type { AtlasHealthOptions, AtlasMetricsOptions, AtlasOverloadOptions, AtlasRevocationsOptions, Readiness, RevocationTarget }
export type { Authenticate, AuthenticateToken, AtlasAuthOptions, AtlasBrokerOptions, AtlasHubOptions, AtlasRepositoryOptions, AtlasTaskRoutesOptions, AtlasWebSocketOptions }
export { MUTATION_ID_HEADER, etagOf, parseIfMatch } from './task-routes.js'
export * from '../lib/index.js'
export { atlasClientAssets, AtlasClientAssetsOptionsSchema, type AtlasClientAssetsOptions } from './client-assets.js'
export { atlasOps, AtlasOpsOptionsSchema, type AtlasOpsOptions } from './ops.js'
// @fastify/websocket's additions to Fastify's types (`request.ws`, routes' `websocket: true`) come
// with this package's types: an integrator's `authenticate` reading request.ws type-checks as is.
export type {} from '@fastify/websocket'
