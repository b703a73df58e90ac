import fp from 'fastify-plugin'
import type { FastifyPluginAsync } from 'fastify'
import { Hub } from '../lib/hub.js'
import type { RetentionPolicy } from '../lib/repository.js'
import type { LoggedEvent } from '../lib/types.js'
import { checkFunction, checkPositiveInteger, optionError } from './options.js'

export interface AtlasHubOptions {
  /** A resume further behind than this many events is told to resync (default 10000). */
  maxReplayEvents?: number
  /** How often the outbox is relayed, in ms (default 1000; 0: only at start and on reconnect). */
  relayIntervalMs?: number
  /** Unpublished events younger than this are left to their own publish, not relayed (default 1000). */
  relayGraceMs?: number
  /** Event log retention, applied every `pruneIntervalMs` (default 60000; 0: never). */
  retention?: RetentionPolicy & { pruneIntervalMs?: number }
  /** How long shutdown waits for publishes in flight, in ms (default 5000). */
  closeTimeoutMs?: number
  /** Test hook: runs after commit, before publish. */
  beforePublish?: (event: LoggedEvent) => void
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Per-team fan-out of this instance. */
    atlasHub: Hub
  }
}

const NAME = 'atlas-hub'

const hubPlugin: FastifyPluginAsync<AtlasHubOptions> = async (fastify, options) => {
  checkPositiveInteger(NAME, 'maxReplayEvents', options.maxReplayEvents)
  checkPositiveInteger(NAME, 'relayIntervalMs', options.relayIntervalMs, { allowZero: true })
  checkPositiveInteger(NAME, 'relayGraceMs', options.relayGraceMs, { allowZero: true })
  checkPositiveInteger(NAME, 'closeTimeoutMs', options.closeTimeoutMs, { allowZero: true })
  checkFunction(NAME, 'beforePublish', options.beforePublish)
  const { retention = {} } = options
  if (typeof retention !== 'object' || retention === null) throw optionError(NAME, 'option retention must be an object')
  for (const key of ['maxEventsPerTeam', 'maxEventAgeMs', 'mutationIdTtlMs', 'pruneIntervalMs'] as const) {
    checkPositiveInteger(NAME, `retention.${key}`, retention[key], { allowZero: true })
  }
  const hub = new Hub({
    repository: fastify.taskRepository,
    broker: fastify.atlasBroker,
    logger: fastify.log,
    maxReplayEvents: options.maxReplayEvents,
    relayIntervalMs: options.relayIntervalMs,
    relayGraceMs: options.relayGraceMs,
    retention,
    beforePublish: options.beforePublish
  })
  fastify.decorate('atlasHub', hub)
  fastify.addHook('onClose', async () => { await hub.close(options.closeTimeoutMs) })
}

export const atlasHub = fp(hubPlugin, { fastify: '5.x', name: NAME, dependencies: ['atlas-repository', 'atlas-broker'] })
export default atlasHub
