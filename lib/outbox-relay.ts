import type { Broker } from './broker.js'
import { outboxRelayed } from './diagnostics.js'
import type { Logger } from './logger.js'
import type { TaskRepository } from './repository.js'
import type { LoggedEvent } from './types.js'

/**
 * Test hook, off the public options: runs after an event committed and before it is published.
 * A hook that throws makes that publish fail (the event stays in the outbox); one that kills the
 * process shows what a crash between commit and publish leaves behind.
 */
export const kBeforePublish = Symbol.for('atlas-realtime.test.beforePublish')

export interface OutboxRelayOptions {
  repository: TaskRepository
  broker: Broker
  logger: Logger
  /** How often unpublished events older than `relayGraceMs` are relayed (0: only at start and on reconnect). */
  relayIntervalMs: number
  /** Unpublished events younger than this are left to their own publish. */
  relayGraceMs: number
  /**
   * Told of each event the relay publishes (read from the log, not a commit of this instance's
   * that it just heard of): the broker does not echo an instance's own messages, so this
   * instance's hub takes relayed events from here.
   */
  onRelayed?: (event: LoggedEvent) => void
  [kBeforePublish]?: (event: LoggedEvent) => void
}

/** How often published marks are written (one transaction for all of them); well under relayGraceMs. */
const PUBLISHED_FLUSH_MS = 200
const RELAY_PAGE = 1000
/** A relay bound that includes every unpublished event, even one committed this millisecond. */
const EVERYTHING = Number.MAX_SAFE_INTEGER

/**
 * The event log as an outbox: every event committed here is handed to the broker, and the log's
 * `published` flag records which ones the broker took. What it could not take (Redis down, the
 * process killed between commit and publish) is relayed later, oldest first per team: at start,
 * when the broker is back, and every `relayIntervalMs`.
 */
export class OutboxRelay {
  readonly #repository: TaskRepository
  readonly #broker: Broker
  readonly #log: Logger
  readonly #relayGraceMs: number
  readonly #beforePublish: ((event: LoggedEvent) => void) | undefined
  readonly #onRelayed: ((event: LoggedEvent) => void) | undefined
  readonly #timer: NodeJS.Timeout | undefined
  readonly #unsubscribeCommits: () => void
  #publishedBatch: Array<{ teamId: string, seq: number }> = []
  #flushScheduled = false
  readonly #inflight = new Set<Promise<unknown>>()
  #relaying = false
  /** Reading the outbox failed last time: its failures are logged once, not every interval. */
  #readFailing = false
  /** A relay asked for while one was running: the latest `before` asked for, run when it ends. */
  #relayAgain: number | undefined
  #closed = false

  constructor (options: OutboxRelayOptions) {
    this.#repository = options.repository
    this.#broker = options.broker
    this.#log = options.logger
    this.#relayGraceMs = options.relayGraceMs
    this.#beforePublish = options[kBeforePublish]
    this.#onRelayed = options.onRelayed
    this.#unsubscribeCommits = this.#repository.onCommit((event) => { this.#publish(event) })
    if (options.relayIntervalMs > 0) {
      this.#timer = setInterval(() => { this.#relay(Date.now() - this.#relayGraceMs) }, options.relayIntervalMs)
      this.#timer.unref()
    }
    // Whatever an earlier process committed and never published goes out now.
    this.relayAll()
  }

  /** Publishes every unpublished event (the broker is back, or a process just started). */
  relayAll (): void {
    this.#relay(EVERYTHING)
  }

  /** Records the events the broker took as published (one transaction). Never rejects. */
  async flushPublished (): Promise<void> {
    if (this.#publishedBatch.length === 0) return
    const batch = this.#publishedBatch
    this.#publishedBatch = []
    try {
      await this.#repository.markPublished(batch)
    } catch (err) {
      // Not fatal: the events are simply relayed again and receivers drop the duplicates.
      this.#log.warn({ err }, 'atlas: marking events published failed')
    }
  }

  /** Stops relaying, waits for publishes in flight (bounded by `timeoutMs`), records what was published. */
  async close (timeoutMs: number): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#unsubscribeCommits()
    clearInterval(this.#timer)
    let timeout: NodeJS.Timeout | undefined
    await Promise.race([
      Promise.allSettled([...this.#inflight]),
      new Promise((resolve) => { timeout = setTimeout(resolve, timeoutMs) })
    ])
    clearTimeout(timeout)
    await this.flushPublished()
  }

  /** Hands an event to the broker; resolves true when the broker took it (never rejects). */
  #publish (event: LoggedEvent): Promise<boolean> {
    try {
      this.#beforePublish?.(event)
    } catch (err) {
      // Runs after commit: a throw must not turn a committed mutation into an error for its
      // caller. The event is simply not published now and stays in the outbox.
      this.#log.warn({ err, teamId: event.teamId, seq: event.seq }, 'atlas: beforePublish threw; the event stays in the outbox')
      return Promise.resolve(false)
    }
    const publishing: Promise<boolean> = this.#broker.publish(event).then(() => {
      this.#publishedBatch.push({ teamId: event.teamId, seq: event.seq })
      this.#scheduleFlush()
      return true
    }, (err: unknown) => {
      this.#log.debug({ err, teamId: event.teamId, seq: event.seq }, 'atlas: publish failed; the event stays in the outbox')
      return false
    }).finally(() => { this.#inflight.delete(publishing) })
    this.#inflight.add(publishing)
    return publishing
  }

  /** Publishes unpublished events committed before `before`, oldest first per team. */
  #relay (before: number): void {
    if (this.#closed) return
    if (this.#relaying) {
      // E.g. a reconnect while the previous relay's publishes still hang: dropping this request
      // would leave what was refused meanwhile in the outbox until the next trigger (never, with
      // relayIntervalMs 0). It runs when the current relay ends.
      this.#relayAgain = Math.max(this.#relayAgain ?? 0, before)
      return
    }
    this.#relaying = true
    this.#relayPage(before).then((again) => {
      this.#relaying = false
      const asked = this.#relayAgain
      this.#relayAgain = undefined
      // A full page the broker took: more may be waiting; read on in a later turn, letting I/O in between.
      if (again) setImmediate(() => { this.#relay(Math.max(before, asked ?? 0)) })
      else if (asked !== undefined) this.#relay(asked)
      // A page the broker refused is not read again at once: with Redis down that would spin
      // forever and starve the event loop. The next interval or reconnect retries.
    }, () => {})
  }

  /** One page of the outbox to the broker; true when it was full and all taken (read on). */
  async #relayPage (before: number): Promise<boolean> {
    let pending: LoggedEvent[]
    try {
      pending = await this.#repository.unpublished(before, RELAY_PAGE)
    } catch (err) {
      // Once per outage at warn (the database is down: a relay a second would repeat it).
      if (this.#readFailing) this.#log.debug({ err }, 'atlas: reading the outbox still fails')
      else this.#log.warn({ err }, 'atlas: reading the outbox failed; retried every relayIntervalMs')
      this.#readFailing = true
      return false
    }
    if (this.#readFailing) this.#log.info({}, 'atlas: reading the outbox works again')
    this.#readFailing = false
    if (pending.length === 0 || this.#closed) return false
    this.#log.debug({ count: pending.length }, 'atlas: relaying unpublished events')
    if (this.#onRelayed !== undefined) for (const event of pending) this.#onRelayed(event)
    const taken = await Promise.all(pending.map(async (event) => await this.#publish(event)))
    if (outboxRelayed.hasSubscribers) {
      const published = taken.filter(Boolean).length
      outboxRelayed.publish({ instance: this.#broker.instanceId, published, failed: taken.length - published })
    }
    if (pending.length < RELAY_PAGE || !taken.every(Boolean)) return false
    // Marked before the next read, or that read returns this page again.
    await this.flushPublished()
    return true
  }

  #scheduleFlush (): void {
    if (this.#flushScheduled) return
    this.#flushScheduled = true
    // Batched over a short window: each flush is a write transaction that competes with
    // mutations (of every process) for SQLite's one write lock. Unmarked events are only
    // relayed once older than relayGraceMs, so the delay costs no duplicates.
    setTimeout(() => {
      this.#flushScheduled = false
      void this.flushPublished()
    }, PUBLISHED_FLUSH_MS).unref()
  }
}
