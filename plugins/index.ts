import fp from 'fastify-plugin'
import fastifyWebsocket from '@fastify/websocket'
import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import { CloseCode } from '../protocol/constants.js'
import { atlasAuth, type AtlasAuthOptions, type Authenticate } from './auth.js'
import { atlasBroker, type AtlasBrokerOptions } from './broker.js'
import { atlasCredentials } from './credentials.js'
import { atlasHub, type AtlasHubOptions } from './hub.js'
import { atlasRepository, type AtlasRepositoryOptions } from './repository.js'
import { atlasTaskRoutes, type AtlasTaskRoutesOptions } from './task-routes.js'
import { atlasUpgradeGuard } from './upgrade-guard.js'
import { atlasWebSocket, RECOMMENDED_MAX_PAYLOAD, type AtlasWebSocketOptions } from './websocket.js'
import { optionError } from './options.js'

export interface AtlasRealtimeOptions {
  /** Who is asking: returns `{ userId, teams }` or null. Used on HTTP and on the upgrade. */
  authenticate: Authenticate
  /** SQLite database of tasks and event logs. */
  database: AtlasRepositoryOptions
  /** Fan-out between instances; leave `redis` unset for one process. */
  broker?: AtlasBrokerOptions
  hub?: AtlasHubOptions
  websocket?: AtlasWebSocketOptions & {
    /** Largest client frame in bytes; larger ones close the socket with 1009 (default 64 KiB). */
    maxPayload?: number
  }
  /** The suite's task routes; `false` to register none (your own routes still broadcast). */
  routes?: AtlasTaskRoutesOptions | false
  /** Limits of [`atlasAuth`](#atlasauth) (failed authentications per IP). */
  auth?: Omit<AtlasAuthOptions, 'authenticate'>
}

const NAME = 'atlas-realtime'

/** Registers the whole suite from one options object. */
const atlasRealtimePlugin: FastifyPluginAsync<AtlasRealtimeOptions> = async (fastify, options) => {
  if (typeof options !== 'object' || options === null) throw optionError(NAME, 'options are required')
  if (typeof options.database !== 'object' || options.database === null) {
    throw optionError(NAME, 'option database is required, e.g. { databasePath: "./atlas.db" }')
  }
  const { maxPayload = RECOMMENDED_MAX_PAYLOAD, ...websocket } = options.websocket ?? {}
  // First: they act on every request and every route declared after them.
  await fastify.register(atlasCredentials)
  await fastify.register(atlasUpgradeGuard)
  await fastify.register(atlasRepository, options.database)
  await fastify.register(atlasBroker, options.broker ?? {})
  await fastify.register(atlasHub, options.hub ?? {})
  // With Redis, rate-limit counters live there too, so a limit holds across instances.
  const rateLimitRedis = options.broker?.redis
  await fastify.register(atlasAuth, { rateLimitRedis, ...options.auth, authenticate: options.authenticate })
  if (!fastify.hasDecorator('websocketServer')) {
    await fastify.register(fastifyWebsocket, { options: { maxPayload }, preClose: atlasWebSocketPreClose })
  }
  await fastify.register(atlasWebSocket, websocket)
  if (options.routes !== false) await fastify.register(atlasTaskRoutes, { rateLimitRedis, ...options.routes })
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
export { atlasAuth, atlasBroker, atlasCredentials, atlasHub, atlasRepository, atlasTaskRoutes, atlasUpgradeGuard, atlasWebSocket }
export type { Authenticate, AtlasAuthOptions, AtlasBrokerOptions, AtlasHubOptions, AtlasRepositoryOptions, AtlasTaskRoutesOptions, AtlasWebSocketOptions }
export { MUTATION_ID_HEADER, etagOf, parseIfMatch } from './task-routes.js'
export * from '../lib/index.js'
