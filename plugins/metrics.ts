import fp from 'fastify-plugin'
import type { FastifyPluginAsync } from 'fastify'
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import * as diagnostics from '../lib/diagnostics.js'
import { Type } from '@sinclair/typebox'
import { boolean, group, optionsChecker, string, type OptionsOf } from './options.js'

export const AtlasMetricsOptionsSchema = group({
  path: Type.Optional(string({ pattern: /^\//, default: '/metrics', description: 'Route of the Prometheus text exposition. Not under the umbrella\'s `prefix`. Keep it off the public internet (a proxy rule, or your own `onRequest` hook on it).' })),
  prefix: Type.Optional(string({ pattern: /^[a-zA-Z_][a-zA-Z0-9_]*$/, default: 'atlas_', description: 'Prefix of every metric name, the process metrics included.' })),
  defaultMetrics: Type.Optional(boolean({ default: true, description: 'Also prom-client\'s process metrics (CPU, heap, event-loop delay, GC).' }))
}, { $id: 'AtlasMetricsOptions', description: 'Options of atlasMetrics.' })

export type AtlasMetricsOptions = OptionsOf<typeof AtlasMetricsOptionsSchema>

declare module 'fastify' {
  interface FastifyInstance {
    /** The registry atlasMetrics serves (add your own metrics to it). */
    atlasMetrics: Registry
  }
}

const NAME = 'atlas-metrics'
const checkOptions = optionsChecker(NAME, AtlasMetricsOptionsSchema)

/** Seconds; from half a millisecond (a local write) to 2.5 s (Redis away, a long replay). */
const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]

type Message = Record<string, unknown>

/**
 * Prometheus metrics of one instance, from the core's diagnostics channels (lib/diagnostics.ts)
 * and from what the instance can be asked on a scrape. No label carries a team or a user: the
 * number of series does not grow with them.
 */
const metricsPlugin: FastifyPluginAsync<AtlasMetricsOptions> = async (fastify, rawOptions) => {
  const { path, prefix, defaultMetrics } = checkOptions(rawOptions)
  const registry = new Registry()
  const registers = [registry]
  if (defaultMetrics) collectDefaultMetrics({ register: registry, prefix })
  const connections = fastify.atlasConnections
  const hub = fastify.atlasHub
  const repository = fastify.taskRepository
  const broker = fastify.atlasBroker

  // Read on each scrape: nothing to keep up to date in between.
  new Gauge({ name: `${prefix}connections`, help: 'Open WebSocket connections.', registers, collect () { this.set(connections.connectionCount) } })
  new Gauge({ name: `${prefix}subscriptions`, help: 'Team subscriptions of the open connections (live or replaying).', registers, collect () { this.set(hub.stats.subscriptions) } })
  new Gauge({ name: `${prefix}outbox_unpublished_events`, help: 'Committed events not yet recorded as published (of every instance sharing the database; what a broker took is recorded within about 100 ms).', registers,
    async collect () {
      // A database that cannot answer leaves the last figure (the readiness says it is down).
      try { this.set(await repository.unpublishedCount()) } catch {}
    }
  })
  new Gauge({ name: `${prefix}broker_connected`, help: '1 while the broker carries messages both ways, else 0.', registers, collect () { this.set(broker.connected ? 1 : 0) } })

  const committed = new Counter({ name: `${prefix}events_committed_total`, help: 'Events committed by this instance.', registers })
  const delivered = new Counter({ name: `${prefix}events_delivered_total`, help: 'Event frames written to live sockets (one per socket), by where the event came from: local (committed here), remote (from the broker), log (read back to fill a gap).', labelNames: ['origin'], registers })
  const lag = new Histogram({ name: `${prefix}delivery_lag_seconds`, help: 'From commit here (origin local) or receipt from the broker (origin remote) to the write to the team\'s sockets; origin log: events read from the log to fill a gap, from the arrival of the event that showed the gap.', labelNames: ['origin'], buckets: LATENCY_BUCKETS, registers })
  const replayed = new Counter({ name: `${prefix}events_replayed_total`, help: 'Event frames written from the log to resuming sockets.', registers })
  const resyncs = new Counter({ name: `${prefix}resyncs_total`, help: 'resync frames sent, by reason.', labelNames: ['reason'], registers })
  const opened = new Counter({ name: `${prefix}connections_opened_total`, help: 'WebSocket connections accepted.', registers })
  const closed = new Counter({ name: `${prefix}connections_closed_total`, help: 'WebSocket connections closed, by close code (1006: dropped without a close frame).', labelNames: ['code'], registers })
  const cuts = new Counter({ name: `${prefix}slow_consumer_cuts_total`, help: 'Connections cut off for not reading (4008).', registers })
  const refusedFrames = new Counter({ name: `${prefix}invalid_frames_total`, help: 'Client frames refused, by error frame code.', labelNames: ['code'], registers })
  const refusedUpgrades = new Counter({ name: `${prefix}upgrade_refusals_total`, help: 'WebSocket upgrades refused, by HTTP status (401 and 403 also when told by close code 4001/4003).', labelNames: ['status'], registers })
  const relayRuns = new Counter({ name: `${prefix}outbox_relay_runs_total`, help: 'Runs of the outbox relay (unpublished events found and handed to the broker).', registers })
  const relayed = new Counter({ name: `${prefix}outbox_relayed_events_total`, help: 'Events the relay handed to the broker, by result.', labelNames: ['result'], registers })
  const reconnects = new Counter({ name: `${prefix}broker_reconnects_total`, help: 'Times the broker\'s subscription came back after being lost.', registers })
  const transactions = new Histogram({ name: `${prefix}db_transaction_duration_seconds`, help: 'One mutation\'s database transaction (the task and its event), lock wait included.', buckets: LATENCY_BUCKETS, registers })
  const requests = new Histogram({ name: `${prefix}http_request_duration_seconds`, help: 'HTTP requests, by method, route pattern and status code.', labelNames: ['method', 'route', 'status_code'], buckets: LATENCY_BUCKETS, registers })

  const unlistenCommits = repository.onCommit(() => { committed.inc() })
  // Channels are the process's: another instance in this process (tests) publishes on them too;
  // each message names its source, and only this instance's count here.
  const instance = broker.instanceId
  const handlers: Array<[{ name: string | symbol }, (message: Message) => void]> = [
    [diagnostics.eventDelivered, (m) => {
      if (m.instance !== instance) return
      delivered.inc({ origin: m.origin as string }, m.count as number)
      if (typeof m.lagMs === 'number') lag.observe({ origin: m.origin as string }, m.lagMs / 1000)
    }],
    [diagnostics.eventsReplayed, (m) => { if (m.instance === instance) replayed.inc(m.count as number) }],
    [diagnostics.resyncSent, (m) => { if (m.instance === instance) resyncs.inc({ reason: m.reason as string }) }],
    [diagnostics.connectionOpened, (m) => { if (m.instance === instance) opened.inc() }],
    [diagnostics.connectionClosed, (m) => {
      if (m.instance !== instance) return
      closed.inc({ code: String(m.code) })
      if (m.slowConsumer === true) cuts.inc()
    }],
    [diagnostics.frameRefused, (m) => { if (m.instance === instance) refusedFrames.inc({ code: m.code as string }) }],
    [diagnostics.upgradeRefused, (m) => { if (m.instance === instance) refusedUpgrades.inc({ status: String(m.statusCode) }) }],
    [diagnostics.outboxRelayed, (m) => {
      if (m.instance !== instance) return
      relayRuns.inc()
      relayed.inc({ result: 'published' }, m.published as number)
      relayed.inc({ result: 'failed' }, m.failed as number)
    }],
    [diagnostics.brokerReconnected, (m) => { if (m.instance === instance) reconnects.inc() }],
    [diagnostics.transactionTimed, (m) => { if (m.repository === repository) transactions.observe((m.durationMs as number) / 1000) }]
  ]
  const subscribed = handlers.map(([channel, handler]) => {
    const listener = (message: unknown): void => { handler(message as Message) }
    subscribe(channel.name, listener)
    return () => { unsubscribe(channel.name, listener) }
  })

  fastify.addHook('onResponse', async (request, reply) => {
    // The route's pattern, never its URL: ids would make a series per task.
    const route = request.routeOptions.url ?? '(unmatched)'
    if (route === path) return
    requests.observe({ method: request.method, route, status_code: String(reply.statusCode) }, reply.elapsedTime / 1000)
  })
  fastify.get(path, { logLevel: 'warn' }, async (_request, reply) => {
    return await reply.type(registry.contentType).send(await registry.metrics())
  })
  fastify.decorate('atlasMetrics', registry)
  fastify.addHook('onClose', async () => {
    unlistenCommits()
    for (const stop of subscribed) stop()
    registry.clear()
  })
}

export const atlasMetrics = fp(metricsPlugin, {
  fastify: '5.x',
  name: NAME,
  dependencies: ['atlas-repository', 'atlas-broker', 'atlas-hub', 'atlas-websocket']
})
export default atlasMetrics
