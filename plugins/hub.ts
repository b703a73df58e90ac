import fp from 'fastify-plugin'
import type { FastifyPluginAsync } from 'fastify'
import { DEFAULT_MAX_REPLAY_EVENTS, Hub } from '../lib/hub.js'
import { kBeforePublish, OutboxRelay } from '../lib/outbox-relay.js'
import { DEFAULT_RETENTION, RetentionPruner } from '../lib/retention.js'
import type { LoggedEvent } from '../lib/types.js'
import { Type } from '@sinclair/typebox'
import { group, integer, optionError, optionsChecker, type OptionsOf } from './options.js'

export const AtlasHubOptionsSchema = group({
  maxReplayEvents: Type.Optional(integer({ default: DEFAULT_MAX_REPLAY_EVENTS, description: 'A client resuming further behind than this many events is told to resync instead.' })),
  relayIntervalMs: Type.Optional(integer({
    allowZero: true,
    default: 1000,
    description: 'How often, in ms, events that never reached the broker (Redis down, process killed after commit) are published again. `0`: only at start-up and when Redis reconnects.'
  })),
  relayGraceMs: Type.Optional(integer({ allowZero: true, default: 1000, description: 'The periodic relay leaves events younger than this many ms to their own publish.' })),
  retention: Type.Optional(group({
    maxEventsPerTeam: Type.Optional(integer({ allowZero: true, default: DEFAULT_RETENTION.maxEventsPerTeam, description: 'Keep at most this many events per team (`0`: no limit by count).' })),
    maxEventAgeMs: Type.Optional(integer({ allowZero: true, default: DEFAULT_RETENTION.maxEventAgeMs, defaultNote: '7 days', description: 'Drop events older than this many ms (`0`: no limit by age).' })),
    mutationIdTtlMs: Type.Optional(integer({ allowZero: true, default: DEFAULT_RETENTION.mutationIdTtlMs, defaultNote: '24 h', description: 'Forget idempotency keys older than this many ms (`0`: never).' })),
    pruneIntervalMs: Type.Optional(integer({ allowZero: true, default: 60_000, description: 'How often, in ms, retention is applied. `0`: never (neither events nor idempotency keys are pruned).' }))
  }, { default: {}, description: 'Event log retention.' })),
  closeTimeoutMs: Type.Optional(integer({ allowZero: true, default: 5000, description: 'How long, in ms, shutdown waits for publishes in flight.' }))
}, { $id: 'AtlasHubOptions', description: 'Options of atlasHub.' })

export type AtlasHubOptions = OptionsOf<typeof AtlasHubOptionsSchema> & {
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

const checkOptions = optionsChecker(NAME, AtlasHubOptionsSchema)

const hubPlugin: FastifyPluginAsync<AtlasHubOptions> = async (fastify, rawOptions) => {
  const options = checkOptions(rawOptions)
  const beforePublish = rawOptions[kBeforePublish]
  if (beforePublish !== undefined && typeof beforePublish !== 'function') throw optionError(NAME, 'the kBeforePublish test hook must be a function')
  const { taskRepository: repository, atlasBroker: broker, log: logger } = fastify
  const { pruneIntervalMs, ...policy } = options.retention
  const relay = new OutboxRelay({
    repository,
    broker,
    logger,
    relayIntervalMs: options.relayIntervalMs,
    relayGraceMs: options.relayGraceMs,
    // Called after a read of the log (never during construction): `hub` exists by then.
    onRelayed: (event) => { hub.offer(event) },
    [kBeforePublish]: beforePublish
  })
  const hub = new Hub({ repository, broker, logger, maxReplayEvents: options.maxReplayEvents, onRecovered: () => { relay.relayAll() } })
  const retentionPruner = new RetentionPruner({ repository, logger, policy, intervalMs: pruneIntervalMs, beforePrune: async () => { await relay.flushPublished() } })
  fastify.decorate('atlasHub', hub)
  fastify.decorate('atlasOutbox', relay)
  fastify.decorate('atlasRetention', retentionPruner)
  fastify.addHook('onClose', async () => {
    hub.close()
    retentionPruner.close()
    await relay.close(options.closeTimeoutMs)
  })
}

export const atlasHub = fp(hubPlugin, { fastify: '5.x', name: NAME, dependencies: ['atlas-repository', 'atlas-broker'] })
export default atlasHub
