import fp from 'fastify-plugin'
import type { FastifyPluginAsync } from 'fastify'
import { Hub } from '../lib/hub.js'
import { kBeforePublish, OutboxRelay } from '../lib/outbox-relay.js'
import type { RetentionPolicy } from '../lib/repository.js'
import { RetentionPruner } from '../lib/retention.js'
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
  /** Test hook (not an option): see kBeforePublish in lib/outbox-relay.ts. */
  [kBeforePublish]?: (event: LoggedEvent) => void
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Per-team fan-out of this instance. */
    atlasHub: Hub
    /** Publishes what this instance commits, and relays what the broker could not take. */
    atlasOutbox: OutboxRelay
    /** Applies the event log's retention policy. */
    atlasRetention: RetentionPruner
  }
}

const NAME = 'atlas-hub'

const hubPlugin: FastifyPluginAsync<AtlasHubOptions> = async (fastify, options) => {
  checkPositiveInteger(NAME, 'maxReplayEvents', options.maxReplayEvents)
  checkPositiveInteger(NAME, 'relayIntervalMs', options.relayIntervalMs, { allowZero: true })
  checkPositiveInteger(NAME, 'relayGraceMs', options.relayGraceMs, { allowZero: true })
  checkPositiveInteger(NAME, 'closeTimeoutMs', options.closeTimeoutMs, { allowZero: true })
  checkFunction(NAME, 'beforePublish', options[kBeforePublish])
  const { retention = {} } = options
  if (typeof retention !== 'object' || retention === null) throw optionError(NAME, 'option retention must be an object')
  for (const key of ['maxEventsPerTeam', 'maxEventAgeMs', 'mutationIdTtlMs', 'pruneIntervalMs'] as const) {
    checkPositiveInteger(NAME, `retention.${key}`, retention[key], { allowZero: true })
  }
  const { taskRepository: repository, atlasBroker: broker, log: logger } = fastify
  const { pruneIntervalMs = 60_000, ...policy } = retention
  const relay = new OutboxRelay({
    repository,
    broker,
    logger,
    relayIntervalMs: options.relayIntervalMs ?? 1000,
    relayGraceMs: options.relayGraceMs ?? 1000,
    [kBeforePublish]: options[kBeforePublish]
  })
  const hub = new Hub({ repository, broker, logger, maxReplayEvents: options.maxReplayEvents, onRecovered: () => { relay.relayAll() } })
  const retentionPruner = new RetentionPruner({ repository, logger, policy, intervalMs: pruneIntervalMs, beforePrune: () => { relay.flushPublished() } })
  fastify.decorate('atlasHub', hub)
  fastify.decorate('atlasOutbox', relay)
  fastify.decorate('atlasRetention', retentionPruner)
  fastify.addHook('onClose', async () => {
    hub.close()
    retentionPruner.close()
    await relay.close(options.closeTimeoutMs ?? 5000)
  })
}

export const atlasHub = fp(hubPlugin, { fastify: '5.x', name: NAME, dependencies: ['atlas-repository', 'atlas-broker'] })
export default atlasHub
