import fp from 'fastify-plugin'
import type { FastifyPluginAsync } from 'fastify'
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { Type } from '@sinclair/typebox'
import * as diagnostics from '../lib/diagnostics.js'
import { group, integer, optionsChecker, type OptionsOf } from './options.js'

export const AtlasOpsOptionsSchema = group({
  intervalMs: Type.Optional(integer({ default: 1000, description: 'How often, in ms, this instance takes a sample of its figures and shares it with the other instances over the broker.' })),
  expireMs: Type.Optional(integer({ default: 5000, description: 'A sample of another instance is forgotten this many ms after it arrived: an instance that stopped (or lost the broker) leaves the list within that time.' })),
  maxInstances: Type.Optional(integer({ default: 64, description: 'Other instances\' samples kept at most: samples are untrusted (anyone who can publish on the broker can send them under any id), so what they can make an instance hold is bounded.' }))
}, { $id: 'AtlasOpsOptions', description: 'Options of atlasOps.' })

export type AtlasOpsOptions = OptionsOf<typeof AtlasOpsOptionsSchema>

/** One instance's figures over its last sampling interval. */
export interface OpsSample {
  /** The instance's broker id (`atlasBroker.instanceId`). */
  instance: string
  /** The span, in ms, the rates and the lag percentiles cover. */
  intervalMs: number
  /** Open WebSocket connections at the end of the interval. */
  connections: number
  /** Team subscriptions of those connections. */
  subscriptions: number
  /** Events committed by the instance, per second. */
  committedPerSecond: number
  /** Event frames written to live sockets (one per socket), per second. */
  deliveredPerSecond: number
  /** Median delivery lag over the interval in ms (commit or broker receipt → socket write); null without deliveries. */
  lagP50Ms: number | null
  /** 99th percentile of the same; null without deliveries. */
  lagP99Ms: number | null
  /** Committed events not yet recorded as published (of the shared database). */
  outboxUnpublished: number
  /** Whether the instance's broker carries messages both ways. */
  brokerConnected: boolean
}

export interface OpsInstanceStats extends OpsSample {
  /** This instance's own figures (the others came over the broker). */
  self: boolean
  /** How long ago, in ms, the sample was taken (own) or arrived (others), by this instance's clock. */
  ageMs: number
}

export interface OpsStats {
  /** The id of the instance that answered. */
  self: string
  intervalMs: number
  /** Every instance heard from within `expireMs`, this one first, then by id. */
  instances: OpsInstanceStats[]
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The latest figures of this instance and of every other one heard from within `expireMs`. */
    atlasOpsStats (): OpsStats
  }
}

const NAME = 'atlas-ops'
const checkOptions = optionsChecker(NAME, AtlasOpsOptionsSchema)

/** Lags kept per interval for the percentiles; past it a uniform sample (reservoir) stands for all. */
const LAG_RESERVOIR = 4096
/** A sample larger than this is not one of ours. */
const MAX_SAMPLE_CHARS = 1024
/** Bound on any figure a received sample may carry (a forged one cannot make the charts absurd beyond it). */
const MAX_FIGURE = 1e12

/**
 * The figures of an operations page, per instance: each instance samples itself every
 * `intervalMs` from the core's diagnostics channels (no prom-client needed) and shares the
 * sample on the broker's stats channel; each keeps the latest of every instance, so any one of
 * them can answer for the whole deployment. Registers no route: put `atlasOpsStats()` behind
 * your own admin check (the example serves it at `/ops/stats`).
 */
const opsPlugin: FastifyPluginAsync<AtlasOpsOptions> = async (fastify, rawOptions) => {
  const { intervalMs, expireMs, maxInstances } = checkOptions(rawOptions)
  const connections = fastify.atlasConnections
  const hub = fastify.atlasHub
  const repository = fastify.taskRepository
  const broker = fastify.atlasBroker
  const instance = broker.instanceId

  let committed = 0
  let delivered = 0
  let lags: number[] = []
  let lagsSeen = 0
  const unlistenCommits = repository.onCommit(() => { committed++ })
  // The channels are the process's: another instance in this process (tests) reports there too.
  const onDelivered = (message: unknown): void => {
    const m = message as { instance?: unknown, count?: unknown, lagMs?: unknown }
    if (m.instance !== instance) return
    delivered += m.count as number
    if (typeof m.lagMs !== 'number') return
    // Reservoir sampling: a busy second keeps a bounded, uniform set of its lags.
    lagsSeen++
    if (lags.length < LAG_RESERVOIR) lags.push(m.lagMs)
    else {
      const slot = Math.floor(Math.random() * lagsSeen)
      if (slot < LAG_RESERVOIR) lags[slot] = m.lagMs
    }
  }
  subscribe(diagnostics.eventDelivered.name, onDelivered)

  let last = performance.now()
  /** The outbox's backlog as last read: counted in the background, so a sample never waits on the database. */
  let outboxUnpublished = 0
  const take = (): OpsSample => {
    repository.unpublishedCount().then((count) => { outboxUnpublished = count }, () => {})
    const now = performance.now()
    const seconds = Math.max(now - last, 1) / 1000
    const sorted = lags.sort((a, b) => a - b)
    const sample: OpsSample = {
      instance,
      intervalMs: Math.round(now - last),
      connections: connections.connectionCount,
      subscriptions: hub.stats.subscriptions,
      committedPerSecond: round(committed / seconds),
      deliveredPerSecond: round(delivered / seconds),
      lagP50Ms: percentile(sorted, 0.5),
      lagP99Ms: percentile(sorted, 0.99),
      outboxUnpublished,
      brokerConnected: broker.connected
    }
    last = now
    committed = 0
    delivered = 0
    lags = []
    lagsSeen = 0
    return sample
  }

  let own = { sample: take(), at: Date.now() }
  const others = new Map<string, { sample: OpsSample, at: number }>()
  const expire = (now: number): void => {
    for (const [id, entry] of others) if (now - entry.at > expireMs) others.delete(id)
  }
  broker.watchStats?.((text, origin) => {
    const sample = parseSample(text, origin)
    if (sample === undefined) return
    const now = Date.now()
    if (!others.has(origin)) {
      expire(now)
      if (others.size >= maxInstances) return
    }
    others.set(origin, { sample, at: now })
  })

  const timer = setInterval(() => {
    own = { sample: take(), at: Date.now() }
    expire(own.at)
    broker.publishStats?.(JSON.stringify(own.sample))
  }, intervalMs)
  // The sampler alone must not keep the process alive.
  timer.unref()

  fastify.decorate('atlasOpsStats', (): OpsStats => {
    const now = Date.now()
    expire(now)
    const rest = [...others.values()]
      .sort((a, b) => a.sample.instance.localeCompare(b.sample.instance))
      .map(({ sample, at }) => ({ ...sample, self: false, ageMs: now - at }))
    return { self: instance, intervalMs, instances: [{ ...own.sample, self: true, ageMs: now - own.at }, ...rest] }
  })
  fastify.addHook('onClose', async () => {
    clearInterval(timer)
    unlistenCommits()
    unsubscribe(diagnostics.eventDelivered.name, onDelivered)
  })
}

function round (value: number): number {
  return Math.round(value * 100) / 100
}

/** Nearest-rank percentile of an ascending list, rounded to µs; null when empty. */
function percentile (sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null
  const value = sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]
  return Math.round(value * 1000) / 1000
}

const isFigure = (value: unknown): value is number => typeof value === 'number' && Number.isFinite(value) && value >= 0 && value <= MAX_FIGURE
const isLag = (value: unknown): value is number | null => value === null || isFigure(value)

/**
 * A sample another instance sent, checked: the broker's stats channel is open to anyone who can
 * publish on Redis, so only the expected figures of the expected types are kept, under the id
 * the message came with.
 */
export function parseSample (text: string, origin: string): OpsSample | undefined {
  if (text.length > MAX_SAMPLE_CHARS || origin.length > 128) return undefined
  let value: unknown
  try { value = JSON.parse(text) } catch { return undefined }
  if (typeof value !== 'object' || value === null) return undefined
  const s = value as Record<string, unknown>
  if (!isFigure(s.intervalMs) || !isFigure(s.connections) || !isFigure(s.subscriptions) || !isFigure(s.committedPerSecond) ||
    !isFigure(s.deliveredPerSecond) || !isLag(s.lagP50Ms) || !isLag(s.lagP99Ms) || !isFigure(s.outboxUnpublished) ||
    typeof s.brokerConnected !== 'boolean') return undefined
  return {
    instance: origin,
    intervalMs: s.intervalMs,
    connections: s.connections,
    subscriptions: s.subscriptions,
    committedPerSecond: s.committedPerSecond,
    deliveredPerSecond: s.deliveredPerSecond,
    lagP50Ms: s.lagP50Ms,
    lagP99Ms: s.lagP99Ms,
    outboxUnpublished: s.outboxUnpublished,
    brokerConnected: s.brokerConnected
  }
}

export const atlasOps = fp(opsPlugin, {
  fastify: '5.x',
  name: NAME,
  dependencies: ['atlas-repository', 'atlas-broker', 'atlas-hub', 'atlas-websocket']
})
export default atlasOps
