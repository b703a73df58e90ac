import type { Broker } from './broker.js'
import type { ResyncReason, ServerControlFrame } from './protocol.js'
import type { RetentionPolicy, TaskRepository } from './repository.js'
import { SharedFrame } from './shared-frame.js'
import type { LoggedEvent } from './types.js'

/** One subscriber of team streams: a WebSocket connection, in practice. */
export interface HubClient {
  readonly closed: boolean
  /** Whether the client still wants this team; false once it unsubscribed while a join was pending. */
  wants (teamId: string): boolean
  /** Sends an event frame. The same frame is handed to every client of the team: do not change it. */
  sendEvent (frame: SharedFrame): void
  sendControl (frame: ServerControlFrame): void
  /**
   * Optional, for a replay paced by the client: writes events from the start of `events` in one
   * write, as many as the client takes before its buffer is full (at least one while it is open),
   * and returns how many it wrote. Without it, replayed events go through `sendEvent`.
   */
  sendReplayed? (events: readonly LoggedEvent[]): number
  /**
   * Optional: resolves true once the client can take more replayed events, false when it was
   * closed or cut off meanwhile.
   */
  drained? (): Promise<boolean>
  /**
   * Optional: charges `bytes` of replayed events to the client's replay budget; false (and
   * nothing charged) when the budget cannot take them now.
   */
  chargeReplay? (bytes: number): boolean
}

export interface HubLogger {
  warn (obj: object, msg: string): void
  error (obj: object, msg: string): void
  debug (obj: object, msg: string): void
}

export interface HubOptions {
  repository: TaskRepository
  broker: Broker
  logger?: HubLogger
  /** A resume further behind than this many events gets a resync instead of a replay. */
  maxReplayEvents?: number
  /** How often unpublished events older than `relayGraceMs` are relayed (0: only at start and on reconnect). */
  relayIntervalMs?: number
  relayGraceMs?: number
  /**
   * Retention of the event log, enforced every `pruneIntervalMs` (default 60000; 0: never).
   * Defaults: 50,000 events per team, 7 days, mutation ids 24 h; 0 for any of them: no limit.
   */
  retention?: RetentionPolicy & { pruneIntervalMs?: number }
  /** Test hook: runs after an event committed and before it is published. */
  beforePublish?: (event: LoggedEvent) => void
}

/** The local subscribers of one team and how far this instance has delivered the team's log. */
class TeamStream {
  readonly clients = new Set<HubClient>()
  /**
   * Clients whose replay is still running, each with a token of that replay: they get no live
   * events (the replay reads them from the log) until the replay hands them over to `clients`.
   * A later join or a leave replaces or removes the token, which stops the older replay.
   */
  readonly replaying = new Map<HubClient, object>()
  /** Highest seq handed to the clients; every seq up to it was handed out, in order. */
  delivered = 0
  ready = false
  pendingJoins = 0
  constructor (readonly subscribed: Promise<void>) {}
}

const CATCH_UP_PAGE = 500
/** Events read from the log per replay step; the client's buffer decides how many are written at once. */
const REPLAY_PAGE = 100
/** How often published marks are written (one transaction for all of them); well under relayGraceMs. */
const PUBLISHED_FLUSH_MS = 200
const RELAY_PAGE = 1000
/** A relay bound that includes every unpublished event, even one committed this millisecond. */
const EVERYTHING = Number.MAX_SAFE_INTEGER
const silentLogger: HubLogger = { warn () {}, error () {}, debug () {} }

/**
 * Per-instance fan-out. For each team with local subscribers it keeps one ordered, gapless
 * stream: an event is handed on only when it is the next seq; anything else (a gap after a lost
 * broker message, a reconnect, an event from another instance that arrived before an earlier
 * one) is filled from the event log first. Events committed here are published to the other
 * instances; the log's `published` flag makes it an outbox that is relayed when the broker
 * could not take an event.
 */
export class Hub {
  readonly #repository: TaskRepository
  readonly #broker: Broker
  readonly #log: HubLogger
  readonly #teams = new Map<string, TeamStream>()
  readonly #maxReplay: number
  readonly #relayGraceMs: number
  readonly #beforePublish: ((event: LoggedEvent) => void) | undefined
  readonly #retention: RetentionPolicy
  readonly #timers: NodeJS.Timeout[] = []
  readonly #unsubscribeCommits: () => void
  #publishedBatch: Array<{ teamId: string, seq: number }> = []
  #flushScheduled = false
  #inflight = new Set<Promise<unknown>>()
  #relaying = false
  /** A relay asked for while one was running: the latest `before` asked for, run when it ends. */
  #relayAgain: number | undefined
  #closed = false

  constructor (options: HubOptions) {
    this.#repository = options.repository
    this.#broker = options.broker
    this.#log = options.logger ?? silentLogger
    this.#maxReplay = options.maxReplayEvents ?? 10_000
    this.#relayGraceMs = options.relayGraceMs ?? 1000
    this.#beforePublish = options.beforePublish
    const { pruneIntervalMs = 60_000, ...retention } = options.retention ?? {}
    // Bounded by default: a log nobody prunes grows forever. A week, or 50,000 events per team,
    // covers any realistic offline client; one further behind refetches the list.
    this.#retention = { maxEventsPerTeam: 50_000, maxEventAgeMs: 7 * 24 * 3600_000, ...retention }
    this.#broker.attach({
      onEvent: (event) => { this.#advance(event) },
      onResubscribed: () => { this.#recover() }
    })
    this.#unsubscribeCommits = this.#repository.onCommit((event) => {
      this.#advance(event)
      this.#publish(event)
    })
    const relayIntervalMs = options.relayIntervalMs ?? 1000
    if (relayIntervalMs > 0) this.#every(relayIntervalMs, () => { this.#relay(Date.now() - this.#relayGraceMs) })
    if (pruneIntervalMs > 0) this.#every(pruneIntervalMs, () => { this.prune() })
    // Whatever an earlier process committed and never published goes out now.
    this.#relay(EVERYTHING)
  }

  /** Number of teams with local subscribers, and of subscriptions (live or still replaying). */
  get stats (): { teams: number, subscriptions: number } {
    let subscriptions = 0
    for (const stream of this.#teams.values()) subscriptions += stream.clients.size + stream.replaying.size
    return { teams: this.#teams.size, subscriptions }
  }

  /**
   * Subscribes `client` to a team's events. With `since` (the last seq the client holds) it is
   * first sent every later event from the log, then live ones, and then the `subscribed` frame
   * (or a `resync` when the log cannot serve `since`). The replay is paced by the client: a page
   * at a time, each written only once the client took the one before, and never more than one
   * page per turn of the event loop, so a long replay neither cuts off a reader that keeps up
   * nor holds up the other clients. Resolves when the client is live (or gone).
   */
  async join (client: HubClient, teamId: string, since?: number): Promise<void> {
    if (this.#closed) return
    const stream = this.#streamFor(teamId)
    stream.pendingJoins++
    try {
      await stream.subscribed
    } finally {
      stream.pendingJoins--
    }
    if (client.closed || this.#closed || !client.wants(teamId)) {
      this.#releaseIfIdle(teamId, stream)
      return
    }
    if (stream.clients.has(client)) {
      client.sendControl({ type: 'subscribed', teamId, seq: stream.delivered, replayed: 0 })
      return
    }
    // Subscribed again while its replay runs: that replay ends with the `subscribed` frame.
    if (stream.replaying.has(client)) return
    const { head, prunedThrough } = this.#repository.history(teamId)
    if (head > stream.delivered) this.#catchUp(teamId, stream)
    let resync: ResyncReason | undefined
    if (since !== undefined) {
      if (since > head) resync = 'ahead_of_log'
      else if (since < prunedThrough) resync = 'history_pruned'
      else if (stream.delivered - since > this.#maxReplay) resync = 'too_far_behind'
    }
    if (since === undefined || resync !== undefined || since === stream.delivered) {
      this.#goLive(client, teamId, stream, resync, 0)
      return
    }
    const token = {}
    stream.replaying.set(client, token)
    await this.#replay(client, teamId, stream, token, since)
  }

  leave (client: HubClient, teamId: string): void {
    const stream = this.#teams.get(teamId)
    if (stream === undefined) return
    stream.clients.delete(client)
    stream.replaying.delete(client)
    this.#releaseIfIdle(teamId, stream)
  }

  leaveAll (client: HubClient, teamIds: Iterable<string>): void {
    for (const teamId of teamIds) this.leave(client, teamId)
  }

  /** Applies the retention policy now. */
  prune (): void {
    try {
      // What is known to be published may be pruned: record it first.
      this.#flushPublished()
      const removed = this.#repository.prune(this.#retention)
      if (removed.events > 0 || removed.mutationIds > 0) this.#log.debug(removed, 'atlas: pruned event log')
    } catch (err) {
      this.#log.warn({ err }, 'atlas: pruning the event log failed; retrying later')
    }
  }

  /** Stops timers, waits for publishes in flight (bounded by `timeoutMs`), records what was published. */
  async close (timeoutMs = 5000): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#unsubscribeCommits()
    for (const timer of this.#timers) clearInterval(timer)
    let timeout: NodeJS.Timeout | undefined
    await Promise.race([
      Promise.allSettled([...this.#inflight]),
      new Promise((resolve) => { timeout = setTimeout(resolve, timeoutMs) })
    ])
    clearTimeout(timeout)
    this.#flushPublished()
    this.#teams.clear()
  }

  #every (ms: number, fn: () => void): void {
    const timer = setInterval(fn, ms)
    timer.unref()
    this.#timers.push(timer)
  }

  #streamFor (teamId: string): TeamStream {
    let stream = this.#teams.get(teamId)
    if (stream === undefined) {
      const created: TeamStream = new TeamStream(this.#broker.subscribe(teamId).catch((err: unknown) => {
        // Not fatal: local commits still reach local clients, and the broker subscribes again
        // when its connection is back, whereupon onResubscribed catches the stream up.
        this.#log.warn({ err, teamId }, 'atlas: broker subscription failed; the team catches up when the broker is back')
      }).then(() => {
        // Subscribed first, head read second: every event after this head arrives by the broker.
        created.delivered = this.#repository.headSeq(teamId)
        created.ready = true
      }))
      stream = created
      this.#teams.set(teamId, stream)
    }
    return stream
  }

  #releaseIfIdle (teamId: string, stream: TeamStream): void {
    if (stream.clients.size > 0 || stream.replaying.size > 0 || stream.pendingJoins > 0 || this.#teams.get(teamId) !== stream) return
    this.#teams.delete(teamId)
    if (!this.#closed) {
      this.#broker.unsubscribe(teamId).catch((err: unknown) => { this.#log.warn({ err, teamId }, 'atlas: broker unsubscribe failed') })
    }
  }

  /** Takes an event from any source (local commit, broker, relay) into its team's stream, in order. */
  #advance (event: LoggedEvent): void {
    const stream = this.#teams.get(event.teamId)
    if (stream === undefined || !stream.ready || event.seq <= stream.delivered) return
    if (event.seq === stream.delivered + 1) this.#deliver(stream, event)
    else this.#catchUp(event.teamId, stream)
  }

  #deliver (stream: TeamStream, event: LoggedEvent): void {
    stream.delivered = event.seq
    if (stream.clients.size === 0) return
    const frame = new SharedFrame(event.payload)
    for (const client of stream.clients) client.sendEvent(frame)
  }

  /** Delivers everything the log holds after what this stream delivered. */
  #catchUp (teamId: string, stream: TeamStream): void {
    for (;;) {
      const page = this.#repository.eventsAfter(teamId, stream.delivered, CATCH_UP_PAGE)
      for (const event of page) {
        if (event.seq !== stream.delivered + 1) {
          // Pruned while this instance was cut off: what is missing cannot be replayed.
          this.#log.warn({ teamId, from: stream.delivered, to: event.seq }, 'atlas: events pruned before delivery; clients told to resync')
          for (const client of stream.clients) client.sendControl({ type: 'resync', teamId, seq: event.seq - 1, reason: 'history_pruned' })
          stream.delivered = event.seq - 1
        }
        this.#deliver(stream, event)
      }
      if (page.length < CATCH_UP_PAGE) return
    }
  }

  /**
   * Hands `client` over from replay to live delivery with its `subscribed` (or `resync`) frame.
   * Synchronous: an event delivered just before is in what was replayed, one delivered just
   * after goes to the client live.
   */
  #goLive (client: HubClient, teamId: string, stream: TeamStream, resync: ResyncReason | undefined, replayed: number): void {
    stream.replaying.delete(client)
    stream.clients.add(client)
    if (resync !== undefined) client.sendControl({ type: 'resync', teamId, seq: stream.delivered, reason: resync })
    else client.sendControl({ type: 'subscribed', teamId, seq: stream.delivered, replayed })
  }

  /**
   * Sends the events after `since` up to what the stream delivered (a target that moves while
   * live events arrive), then goes live. Stops as soon as the client left, was cut off, joined
   * again or the hub closed; a hole in the log (pruned meanwhile) or a spent replay budget ends
   * it with a resync instead.
   */
  async #replay (client: HubClient, teamId: string, stream: TeamStream, token: object, since: number): Promise<void> {
    const current = (): boolean => !this.#closed && !client.closed && stream.replaying.get(client) === token && this.#teams.get(teamId) === stream
    let last = since
    while (last < stream.delivered) {
      const page = this.#repository.eventsAfter(teamId, last, Math.min(REPLAY_PAGE, stream.delivered - last))
      // Another process pruned after history() was read: never hand on a hole.
      if (page.length === 0 || page[0].seq !== last + 1) return this.#goLive(client, teamId, stream, 'history_pruned', 0)
      if (client.chargeReplay !== undefined && !client.chargeReplay(pageBytes(page))) {
        return this.#goLive(client, teamId, stream, 'replay_limited', 0)
      }
      for (let rest: readonly LoggedEvent[] = page; rest.length > 0;) {
        const written = this.#sendReplayed(client, rest)
        rest = rest.slice(written)
        if (client.drained !== undefined && !await client.drained()) return this.#abandon(client, teamId, stream, token)
        // One page per turn at most: whatever else is waiting (other sockets, requests) goes first.
        await new Promise((resolve) => setImmediate(resolve))
        if (!current()) return this.#abandon(client, teamId, stream, token)
      }
      last = page[page.length - 1].seq
    }
    this.#goLive(client, teamId, stream, undefined, last - since)
  }

  /** A replay that ends without going live leaves nothing behind: no entry, no idle stream. */
  #abandon (client: HubClient, teamId: string, stream: TeamStream, token: object): void {
    if (stream.replaying.get(client) === token) stream.replaying.delete(client)
    this.#releaseIfIdle(teamId, stream)
  }

  #sendReplayed (client: HubClient, events: readonly LoggedEvent[]): number {
    if (client.sendReplayed !== undefined) return Math.max(1, client.sendReplayed(events))
    for (const event of events) client.sendEvent(new SharedFrame(event.payload))
    return events.length
  }

  /** After a broker reconnect: catch every stream up from the log and relay the outbox. */
  #recover (): void {
    if (this.#closed) return
    for (const [teamId, stream] of this.#teams) {
      if (stream.ready) this.#catchUp(teamId, stream)
    }
    this.#relay(EVERYTHING)
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
    let pending: LoggedEvent[]
    try {
      pending = this.#repository.unpublished(before, RELAY_PAGE)
    } catch (err) {
      this.#log.warn({ err }, 'atlas: reading the outbox failed')
      return
    }
    if (pending.length === 0) return
    this.#relaying = true
    this.#log.debug({ count: pending.length }, 'atlas: relaying unpublished events')
    Promise.all(pending.map(async (event) => await this.#publish(event))).then((taken) => {
      this.#relaying = false
      const again = this.#relayAgain
      this.#relayAgain = undefined
      if (pending.length === RELAY_PAGE && taken.every(Boolean)) {
        // A full page the broker took: more may be waiting. Mark this page first (or the next
        // read returns it again) and read on in a later turn, letting I/O in between.
        this.#flushPublished()
        setImmediate(() => { this.#relay(Math.max(before, again ?? 0)) })
      } else if (again !== undefined) {
        this.#relay(again)
      }
      // A page the broker refused is not read again at once: with Redis down that would spin
      // forever in microtasks and starve the event loop. The next interval or reconnect retries.
    }, () => {})
  }

  #scheduleFlush (): void {
    if (this.#flushScheduled) return
    this.#flushScheduled = true
    // Batched over a short window: each flush is a write transaction that competes with
    // mutations (of every process) for SQLite's one write lock. Unmarked events are only
    // relayed once older than relayGraceMs, so the delay costs no duplicates.
    setTimeout(() => {
      this.#flushScheduled = false
      this.#flushPublished()
    }, PUBLISHED_FLUSH_MS).unref()
  }

  #flushPublished (): void {
    if (this.#publishedBatch.length === 0) return
    const batch = this.#publishedBatch
    this.#publishedBatch = []
    try {
      this.#repository.markPublished(batch)
    } catch (err) {
      // Not fatal: the events are simply relayed again and receivers drop the duplicates.
      this.#log.warn({ err }, 'atlas: marking events published failed')
    }
  }
}

function pageBytes (page: readonly LoggedEvent[]): number {
  let bytes = 0
  for (const event of page) bytes += Buffer.byteLength(event.payload)
  return bytes
}
