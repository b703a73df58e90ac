import { randomUUID } from 'node:crypto'
import { redactUrl } from './redact-url.js'
import type { Redis, RedisOptions } from 'ioredis'
import { decodeBrokerMessage, decodeSignal, decodeStats, encodeBrokerMessage, encodeSignal, encodeStats, type Broker, type BrokerHandlers, type SignalWatcher, type StatsWatcher } from './broker.js'
import type { LoggedEvent } from './types.js'
import { brokerReconnected } from './diagnostics.js'

/** Channel prefix when none is given (atlasBroker's `channelPrefix` documents it). */
export const DEFAULT_CHANNEL_PREFIX = 'atlas:team:'
/** Channel of signals when none is given (atlasBroker's `controlChannel` documents it). */
export const DEFAULT_CONTROL_CHANNEL = 'atlas:control'
/** Channel of statistics samples when none is given (atlasBroker's `statsChannel` documents it). */
export const DEFAULT_STATS_CHANNEL = 'atlas:stats'

export interface RedisBrokerOptions {
  /** Connection used for PUBLISH. */
  publisher: Redis
  /** Connection in subscriber mode; must not be shared with other commands. Its `autoResubscribe` is turned off. */
  subscriber: Redis
  /** Channel of team T is `${channelPrefix}${T}`. */
  channelPrefix?: string
  /** Channel of signals; must not start with `channelPrefix`. */
  controlChannel?: string
  /** Channel of statistics samples; must not start with `channelPrefix` nor be `controlChannel`. */
  statsChannel?: string
  instanceId?: string
}

/**
 * Broker over Redis pub/sub, one channel per team. A publish made while the publisher is not
 * connected is refused at once instead of waiting in ioredis's offline queue: the event is safe
 * in the log and is relayed when the connection is back, so nothing piles up in memory and no
 * HTTP request waits on Redis.
 */
export class RedisBroker implements Broker {
  readonly instanceId: string
  readonly #publisher: Redis
  readonly #subscriber: Redis
  readonly #prefix: string
  readonly #control: string
  readonly #stats: string
  readonly #teams = new Set<string>()
  #handlers: BrokerHandlers | undefined
  readonly #watchers = new Set<SignalWatcher>()
  readonly #statsWatchers = new Set<StatsWatcher>()
  #closed = false

  constructor (options: RedisBrokerOptions) {
    this.instanceId = options.instanceId ?? randomUUID()
    this.#publisher = options.publisher
    this.#subscriber = options.subscriber
    // This broker re-subscribes itself on every 'ready' (and learns from the reply when the
    // subscription is live). ioredis's own re-subscribe is a SUBSCRIBE nobody awaits: when a
    // shutdown ends the socket while a reconnect's handshake is in flight, ioredis still turns
    // 'ready', that SUBSCRIBE is rejected with "Connection is closed." and, unhandled, takes the
    // process down. It is read at each 'ready', so turning it off here covers a client made elsewhere.
    this.#subscriber.options.autoResubscribe = false
    this.#prefix = options.channelPrefix ?? DEFAULT_CHANNEL_PREFIX
    this.#control = options.controlChannel ?? DEFAULT_CONTROL_CHANNEL
    if (this.#control.startsWith(this.#prefix)) throw new TypeError(`RedisBroker: controlChannel ${this.#control} starts with channelPrefix ${this.#prefix}: a team's events and signals must not share channels`)
    this.#stats = options.statsChannel ?? DEFAULT_STATS_CHANNEL
    // Samples are untrusted chart data: never on a channel whose messages make instances act or read.
    if (this.#stats.startsWith(this.#prefix) || this.#stats === this.#control) throw new TypeError(`RedisBroker: statsChannel ${this.#stats} must be a channel of its own (not starting with channelPrefix ${this.#prefix}, not controlChannel)`)
    // Both connections are ready before the broker is made, so any later 'ready' is a reconnect.
    this.#subscriber.on('message', this.#onMessage)
    this.#subscriber.on('ready', this.#onSubscriberReady)
    this.#publisher.on('ready', this.#onPublisherReady)
  }

  /** Both connections are up (the subscriber's SUBSCRIBE may still be in flight just after a reconnect). */
  get connected (): boolean { return this.#publisher.status === 'ready' && this.#subscriber.status === 'ready' }

  /** The connection used for PUBLISH (for diagnostics and tests). */
  get publisher (): Redis { return this.#publisher }

  /** The connection in subscriber mode (for diagnostics and tests). */
  get subscriber (): Redis { return this.#subscriber }

  attach (handlers: BrokerHandlers): void {
    this.#handlers = handlers
  }

  async signal (topic: string): Promise<void> {
    if (this.#publisher.status !== 'ready') throw new Error(`Redis publisher is ${this.#publisher.status}`)
    await this.#publisher.publish(this.#control, encodeSignal(this.instanceId, topic))
  }

  watchSignals (watcher: SignalWatcher): void {
    const first = this.#watchers.size === 0
    this.#watchers.add(watcher)
    // Not connected: the 'ready' handler subscribes the control channel with the teams.
    if (first && this.#subscriber.status === 'ready') {
      this.#subscriber.subscribe(this.#control).catch(() => { /* the next 'ready' subscribes it */ })
    }
  }

  publishStats (sample: string): void {
    // Not connected: dropped, not queued (the next sample follows within a second).
    if (this.#publisher.status !== 'ready') return
    this.#publisher.publish(this.#stats, encodeStats(this.instanceId, sample)).catch(() => { /* dropped, as above */ })
  }

  watchStats (watcher: StatsWatcher): void {
    const first = this.#statsWatchers.size === 0
    this.#statsWatchers.add(watcher)
    if (first && this.#subscriber.status === 'ready') {
      this.#subscriber.subscribe(this.#stats).catch(() => { /* the next 'ready' subscribes it */ })
    }
  }

  async publish (event: LoggedEvent): Promise<void> {
    if (this.#publisher.status !== 'ready') throw new Error(`Redis publisher is ${this.#publisher.status}`)
    await this.#publisher.publish(this.#prefix + event.teamId, encodeBrokerMessage(this.instanceId, event))
  }

  async subscribe (teamId: string): Promise<void> {
    this.#teams.add(teamId)
    // Not connected: do not wait in ioredis's offline queue (that would hold the join, and with
    // it local delivery, for the whole outage, and a queued command makes quit() hang at
    // shutdown). The 'ready' handler subscribes every team and then reports onResubscribed,
    // which catches the stream up from the log.
    if (this.#subscriber.status !== 'ready') return
    await this.#subscriber.subscribe(this.#prefix + teamId)
  }

  async unsubscribe (teamId: string): Promise<void> {
    this.#teams.delete(teamId)
    if (this.#subscriber.status === 'ready') await this.#subscriber.unsubscribe(this.#prefix + teamId)
  }

  async close (): Promise<void> {
    this.#closed = true
    this.#subscriber.off('message', this.#onMessage)
    this.#subscriber.off('ready', this.#onSubscriberReady)
    this.#publisher.off('ready', this.#onPublisherReady)
    this.#teams.clear()
    this.#watchers.clear()
    this.#statsWatchers.clear()
  }

  readonly #onMessage = (channel: string, message: string): void => {
    if (channel === this.#stats) {
      const stats = decodeStats(message)
      if (stats === undefined || stats.origin === this.instanceId) return
      for (const watcher of this.#statsWatchers) watcher(stats.sample, stats.origin)
      return
    }
    if (channel === this.#control) {
      const signal = decodeSignal(message)
      if (signal === undefined || signal.origin === this.instanceId) return
      for (const watcher of this.#watchers) watcher.onSignal(signal.topic)
      return
    }
    if (!channel.startsWith(this.#prefix)) return
    const decoded = decodeBrokerMessage(channel.slice(this.#prefix.length), message)
    if (decoded === undefined || decoded.origin === this.instanceId) return
    decoded.event.arrivedAt = performance.now()
    this.#handlers?.onEvent(decoded.event)
  }

  readonly #onSubscriberReady = (): void => {
    // Only our own SUBSCRIBE's reply proves the subscription is live again; the catch-up read
    // must come after that, not before.
    const channels = [...this.#teams].map((t) => this.#prefix + t)
    if (this.#watchers.size > 0) channels.push(this.#control)
    if (this.#statsWatchers.size > 0) channels.push(this.#stats)
    const resubscribed = channels.length === 0 ? Promise.resolve() : this.#subscriber.subscribe(...channels)
    resubscribed.then(() => {
      if (brokerReconnected.hasSubscribers) brokerReconnected.publish({ instance: this.instanceId })
      this.#resubscribed()
    }, () => { /* the connection dropped again; the next 'ready' retries */ })
  }

  readonly #onPublisherReady = (): void => { this.#resubscribed() }

  #resubscribed (): void {
    if (this.#closed) return
    this.#handlers?.onResubscribed()
    for (const watcher of this.#watchers) watcher.onResubscribed()
  }
}

/** A Redis connection as the options take it: a URL, or ioredis options (with `url`, as @fastify/redis took them). */
export type RedisConnection = string | (RedisOptions & { url?: string })

/**
 * Where `connection` points, for messages and logs: a URL's password (and a `password` query
 * parameter) replaced by `***`; ioredis options shown as the URL they amount to, without
 * their password.
 */
export function redisAddress (connection: RedisConnection): string {
  if (typeof connection === 'string') return redactUrl(connection)
  if (typeof connection.url === 'string') return redactUrl(connection.url)
  if (connection.path !== undefined) return connection.path
  if (connection.sentinels != null) {
    const sentinels = connection.sentinels.map((s) => `${s.host ?? 'localhost'}:${s.port ?? 26379}`).join(', ')
    return `master ${connection.name ?? 'mymaster'} of the sentinels ${sentinels}`
  }
  const user = connection.username === undefined ? '' : `${encodeURIComponent(connection.username)}@`
  return `${connection.tls === undefined ? 'redis' : 'rediss'}://${user}${connection.host ?? 'localhost'}:${connection.port ?? 6379}`
}

/**
 * `err` fit for a log or an error's `cause`: ioredis attaches to a reply error the command it
 * answered, and for a refused HELLO or AUTH that command's arguments hold the password (a
 * logger serialising the error's own properties would write it out).
 */
export function safeRedisError (err: Error): Error {
  if (!('command' in err)) return err
  const copy = new Error(err.message)
  copy.name = err.name
  if (err.stack !== undefined) copy.stack = err.stack
  return copy
}
