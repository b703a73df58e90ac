import type { Broker } from './broker.js'
import { silentLogger, type Logger } from './logger.js'
import type { ResyncReason, ServerControlFrame } from '../protocol/index.js'
import type { TaskRepository, TeamHistory } from './repository.js'
import { SharedFrame } from './shared-frame.js'
import { eventDelivered } from './diagnostics.js'
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

/** A resume further behind than this many events is told to resync (atlasHub's `maxReplayEvents`). */
export const DEFAULT_MAX_REPLAY_EVENTS = 10_000

export interface HubOptions {
  repository: TaskRepository
  broker: Broker
  logger?: Logger
  /** A resume further behind than this many events gets a resync instead of a replay (default 10000). */
  maxReplayEvents?: number
  /**
   * Called when the broker is back after losing its connection, once every stream caught up
   * from the log: messages may have been lost meanwhile, so the outbox should be relayed.
   */
  onRecovered?: () => void
}

/** One running replay; `owed`: subscribes of the same team that came meanwhile, answered when it ends. */
interface Replay { owed: number }

/** The local subscribers of one team and how far this instance has delivered the team's log. */
class TeamStream {
  readonly clients = new Set<HubClient>()
  /**
   * Clients whose replay is still running, each with a token of that replay: they get no live
   * events (the replay reads them from the log) until the replay hands them over to `clients`.
   * A later join or a leave replaces or removes the token, which stops the older replay.
   */
  readonly replaying = new Map<HubClient, Replay>()
  /** Highest seq handed to the clients; every seq up to it was handed out, in order. */
  delivered = 0
  /** False until the head of the log was read (after the broker subscription): events arriving meanwhile wait in `early`. */
  ready = false
  early: Array<{ event: LoggedEvent, origin: Origin }> = []
  /** Events that arrived ahead of the next seq, by seq: handed on once the gap before them is filled. */
  readonly ahead = new Map<number, { event: LoggedEvent, origin: Origin }>()
  /** The read of the log filling a gap, while one runs; `fillAgain`: a gap was seen meanwhile. */
  filling: Promise<void> | undefined
  fillAgain = false
  /** The last read of the log failed (it is retried): logged once, not at every retry. */
  readFailing = false
  pendingJoins = 0
  subscribed: Promise<void> = Promise.resolve()
}

type Origin = 'local' | 'remote' | 'log'

const CATCH_UP_PAGE = 500
/** Events held while a gap before them is read from the log; beyond it, later ones are read from the log too. */
const MAX_AHEAD = 10_000
/** A log read that failed (the database is down) is tried again after this long, while a gap stays open. */
const FILL_RETRY_MS = 1000
/** Events read from the log per replay step; the client's buffer decides how many are written at once. */
const REPLAY_PAGE = 100

/**
 * Per-instance fan-out. For each team with local subscribers it keeps one ordered, gapless
 * stream: an event is handed on only when it is the next seq. Anything else (a gap after a lost
 * broker message, a reconnect, an event from another instance that arrived before an earlier
 * one) is held while the gap is read from the event log, and handed on once the gap is filled,
 * by whichever source brings the missing events first. The log is read asynchronously: nothing
 * here relies on a read and the live stream meeting with no await between them. Publishing
 * what this instance commits is the outbox relay's job (outbox-relay.ts), pruning the log the
 * retention's (retention.ts).
 */
export class Hub {
  readonly #repository: TaskRepository
  readonly #broker: Broker
  readonly #log: Logger
  readonly #teams = new Map<string, TeamStream>()
  readonly #maxReplay: number
  readonly #onRecovered: (() => void) | undefined
  readonly #unsubscribeCommits: () => void
  #closed = false

  constructor (options: HubOptions) {
    this.#repository = options.repository
    this.#broker = options.broker
    this.#log = options.logger ?? silentLogger
    this.#maxReplay = options.maxReplayEvents ?? DEFAULT_MAX_REPLAY_EVENTS
    this.#onRecovered = options.onRecovered
    this.#broker.attach({
      onEvent: (event) => { this.#advance(event, 'remote') },
      onResubscribed: () => { void this.#recover() }
    })
    // Local sockets get a commit at once; publishing it to the other instances is the relay's.
    this.#unsubscribeCommits = this.#repository.onCommit((event) => { this.#advance(event, 'local') })
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
   * nor holds up the other clients. Resolves when the client is live (or gone); rejects when
   * the log could not be read (the caller closes the client: it reconnects and resumes).
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
    if (client.closed || this.#closed || !client.wants(teamId) || this.#teams.get(teamId) !== stream) {
      this.#releaseIfIdle(teamId, stream)
      return
    }
    if (stream.clients.has(client)) {
      client.sendControl({ type: 'subscribed', teamId, seq: stream.delivered, replayed: 0 })
      return
    }
    // Subscribed again while its replay runs: answered when that replay ends, with nothing
    // sent twice (the running replay already brings every event after the first `since`).
    const running = stream.replaying.get(client)
    if (running !== undefined) {
      running.owed++
      return
    }
    // No history asked for: live from the next event the stream hands on.
    if (since === undefined || since === stream.delivered) return this.#goLive(client, teamId, stream, undefined, 0)
    // The replay's token is set before the history is read, so a second subscribe meanwhile
    // waits for this one instead of starting a replay of its own.
    const token: Replay = { owed: 0 }
    stream.replaying.set(client, token)
    let history: TeamHistory
    try {
      history = await this.#repository.history(teamId)
    } catch (err) {
      this.#abandon(client, teamId, stream, token)
      throw err
    }
    const { head, prunedThrough } = history
    // Behind the log (a gap not filled yet): filled first, so the replay's end is past `since`.
    if (head > stream.delivered) await this.#fill(teamId, stream)
    if (!this.#current(client, teamId, stream, token)) return this.#abandon(client, teamId, stream, token)
    if (since <= head && since > stream.delivered) {
      // The fill failed: going live here would hand the client events it holds.
      this.#abandon(client, teamId, stream, token)
      throw new Error(`atlas: the event log of team ${teamId} could not be read up to seq ${since}`)
    }
    let resync: ResyncReason | undefined
    if (since > head) resync = 'ahead_of_log'
    else if (since < prunedThrough) resync = 'history_pruned'
    else if (stream.delivered - since > this.#maxReplay) resync = 'too_far_behind'
    if (resync !== undefined || since === stream.delivered) return this.#goLive(client, teamId, stream, resync, 0)
    await this.#replay(client, teamId, stream, token, since)
  }

  /**
   * Takes an event read from the log elsewhere in this process (the outbox relay publishing what
   * an instance committed and never published, maybe one that died): the broker does not echo
   * this instance's own messages, so without this its sockets would wait for a later event.
   */
  offer (event: LoggedEvent): void {
    this.#advance(event, 'log')
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

  /** Stops taking events; streams are dropped (their sockets are closed by their owner). */
  close (): void {
    if (this.#closed) return
    this.#closed = true
    this.#unsubscribeCommits()
    this.#teams.clear()
  }

  /**
   * The team's stream, made on first use: subscribed to the broker first, the head of the log
   * read second, so every event after that head arrives by the broker or a local commit; what
   * arrives before the head is known waits in `early` and is taken in order once it is.
   */
  #streamFor (teamId: string): TeamStream {
    const existing = this.#teams.get(teamId)
    if (existing !== undefined) return existing
    const stream = new TeamStream()
    this.#teams.set(teamId, stream)
    stream.subscribed = this.#broker.subscribe(teamId).catch((err: unknown) => {
      // Not fatal: local commits still reach local clients, and the broker subscribes again
      // when its connection is back, whereupon onResubscribed catches the stream up.
      this.#log.warn({ err, teamId }, 'atlas: broker subscription failed; the team catches up when the broker is back')
    }).then(async () => await this.#repository.headSeq(teamId)).then((head) => {
      stream.delivered = head
      stream.ready = true
      const early = stream.early
      stream.early = []
      for (const { event, origin } of early) this.#advance(event, origin)
    }, (err: unknown) => {
      // The head could not be read (the database is down): this stream is dropped, so the next
      // join starts afresh instead of waiting on a failure forever.
      if (this.#teams.get(teamId) === stream) {
        this.#teams.delete(teamId)
        this.#broker.unsubscribe(teamId).catch(() => {})
      }
      throw err
    })
    return stream
  }

  #releaseIfIdle (teamId: string, stream: TeamStream): void {
    if (stream.clients.size > 0 || stream.replaying.size > 0 || stream.pendingJoins > 0 || this.#teams.get(teamId) !== stream) return
    this.#teams.delete(teamId)
    if (!this.#closed) {
      this.#broker.unsubscribe(teamId).catch((err: unknown) => { this.#log.warn({ err, teamId }, 'atlas: broker unsubscribe failed') })
    }
  }

  /** Takes an event from any source (local commit, broker) into its team's stream, in order. */
  #advance (event: LoggedEvent, origin: Origin): void {
    const stream = this.#teams.get(event.teamId)
    if (stream === undefined) return
    if (!stream.ready) {
      if (stream.early.length < MAX_AHEAD) stream.early.push({ event, origin })
      return
    }
    if (event.seq <= stream.delivered) return
    if (event.seq === stream.delivered + 1) {
      this.#deliver(stream, event, origin)
      this.#deliverAhead(stream)
      return
    }
    // A gap before it: held (within bounds) while the gap is read from the log.
    if (stream.ahead.size < MAX_AHEAD) stream.ahead.set(event.seq, { event, origin })
    void this.#fill(event.teamId, stream, event.arrivedAt)
  }

  /** Hands on the held events that are now next, and forgets those already delivered. */
  #deliverAhead (stream: TeamStream): void {
    if (stream.ahead.size === 0) return
    for (let next = stream.ahead.get(stream.delivered + 1); next !== undefined; next = stream.ahead.get(stream.delivered + 1)) {
      stream.ahead.delete(next.event.seq)
      this.#deliver(stream, next.event, next.origin)
    }
    for (const seq of stream.ahead.keys()) if (seq <= stream.delivered) stream.ahead.delete(seq)
  }

  /**
   * `origin`: where the event came from; absent when it was read from the log. `lagFrom`: for
   * one read from the log, when the event that showed the gap arrived (the earliest moment this
   * instance knew of it); without it, no lag is known.
   */
  #deliver (stream: TeamStream, event: LoggedEvent, origin: Origin = 'log', lagFrom?: number): void {
    stream.delivered = event.seq
    if (stream.clients.size === 0) return
    const frame = new SharedFrame(event.payload)
    for (const client of stream.clients) client.sendEvent(frame)
    if (eventDelivered.hasSubscribers) {
      const from = event.arrivedAt ?? lagFrom
      const lagMs = from === undefined ? undefined : performance.now() - from
      eventDelivered.publish({ instance: this.#broker.instanceId, count: stream.clients.size, lagMs, origin })
    }
  }

  /**
   * Reads the log after what the stream delivered, and hands on what it finds, until no gap is
   * known. One read at a time per stream; a gap seen meanwhile makes it read once more. Events
   * arriving live during the read are handed on as soon as they are next, so the read's result
   * only fills what is still missing.
   */
  #fill (teamId: string, stream: TeamStream, lagFrom?: number): Promise<void> {
    if (stream.filling !== undefined) {
      stream.fillAgain = true
      return stream.filling
    }
    const filling = (async () => {
      do {
        stream.fillAgain = false
        let page: LoggedEvent[]
        do {
          page = await this.#repository.eventsAfter(teamId, stream.delivered, CATCH_UP_PAGE)
          if (this.#teams.get(teamId) !== stream) return
          for (const event of page) {
            if (event.seq <= stream.delivered) continue
            if (event.seq !== stream.delivered + 1) this.#skipPruned(teamId, stream, event.seq)
            this.#deliver(stream, event, undefined, lagFrom)
          }
          this.#deliverAhead(stream)
        } while (page.length === CATCH_UP_PAGE)
        if (page.length === 0 && stream.ahead.size > 0) {
          // Held events the log no longer leads up to: pruned before this instance read them.
          const first = Math.min(...stream.ahead.keys())
          this.#skipPruned(teamId, stream, first)
          this.#deliverAhead(stream)
        }
      } while (stream.fillAgain || stream.ahead.size > 0)
      stream.readFailing = false
    })().catch((err: unknown) => {
      // Once per stream and outage at warn: the retry every second would repeat it while the database is down.
      if (stream.readFailing) this.#log.debug({ err, teamId }, 'atlas: reading the event log still fails')
      else this.#log.warn({ err, teamId }, 'atlas: reading the event log failed; retrying every second')
      stream.readFailing = true
      setTimeout(() => { if (this.#teams.get(teamId) === stream) void this.#fill(teamId, stream) }, FILL_RETRY_MS).unref()
    }).finally(() => { stream.filling = undefined })
    stream.filling = filling
    return filling
  }

  /** What is missing before `seq` was pruned and cannot be replayed: the clients are told to resync. */
  #skipPruned (teamId: string, stream: TeamStream, seq: number): void {
    this.#log.warn({ teamId, from: stream.delivered, to: seq }, 'atlas: events pruned before delivery; clients told to resync')
    for (const client of stream.clients) client.sendControl({ type: 'resync', teamId, seq: seq - 1, reason: 'history_pruned' })
    stream.delivered = seq - 1
  }

  /**
   * Hands `client` over from replay to live delivery with its `subscribed` (or `resync`) frame.
   * Synchronous: an event delivered just before is in what was replayed, one delivered just
   * after goes to the client live.
   */
  #goLive (client: HubClient, teamId: string, stream: TeamStream, resync: ResyncReason | undefined, replayed: number): void {
    const owed = stream.replaying.get(client)?.owed ?? 0
    stream.replaying.delete(client)
    stream.clients.add(client)
    if (resync !== undefined) client.sendControl({ type: 'resync', teamId, seq: stream.delivered, reason: resync })
    else client.sendControl({ type: 'subscribed', teamId, seq: stream.delivered, replayed })
    for (let i = 0; i < owed; i++) client.sendControl({ type: 'subscribed', teamId, seq: stream.delivered, replayed: 0 })
  }

  /** Whether a replay is still wanted: the client is open, did not leave or join again, and the hub runs. */
  #current (client: HubClient, teamId: string, stream: TeamStream, token: Replay): boolean {
    return !this.#closed && !client.closed && stream.replaying.get(client) === token && this.#teams.get(teamId) === stream
  }

  /**
   * Sends the events after `since` up to what the stream delivered (a target that moves while
   * live events arrive), then goes live. Stops as soon as the client left, was cut off, joined
   * again or the hub closed; a hole in the log (pruned meanwhile) or a spent replay budget ends
   * it with a resync instead.
   */
  async #replay (client: HubClient, teamId: string, stream: TeamStream, token: Replay, since: number): Promise<void> {
    let last = since
    while (last < stream.delivered) {
      let page: LoggedEvent[]
      try {
        page = await this.#repository.eventsAfter(teamId, last, Math.min(REPLAY_PAGE, stream.delivered - last))
      } catch (err) {
        this.#abandon(client, teamId, stream, token)
        throw err
      }
      if (!this.#current(client, teamId, stream, token)) return this.#abandon(client, teamId, stream, token)
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
        if (!this.#current(client, teamId, stream, token)) return this.#abandon(client, teamId, stream, token)
      }
      last = page[page.length - 1].seq
    }
    this.#goLive(client, teamId, stream, undefined, last - since)
  }

  /** A replay that ends without going live leaves nothing behind: no entry, no idle stream. */
  #abandon (client: HubClient, teamId: string, stream: TeamStream, token: Replay): void {
    if (stream.replaying.get(client) === token) stream.replaying.delete(client)
    this.#releaseIfIdle(teamId, stream)
  }

  #sendReplayed (client: HubClient, events: readonly LoggedEvent[]): number {
    if (client.sendReplayed !== undefined) return Math.max(1, client.sendReplayed(events))
    for (const event of events) client.sendEvent(new SharedFrame(event.payload))
    return events.length
  }

  /** After a broker reconnect: catch every stream up from the log, then let the outbox be relayed. */
  async #recover (): Promise<void> {
    if (this.#closed) return
    const fills: Array<Promise<void>> = []
    for (const [teamId, stream] of this.#teams) {
      if (stream.ready) fills.push(this.#fill(teamId, stream))
    }
    await Promise.all(fills)
    if (!this.#closed) this.#onRecovered?.()
  }
}

function pageBytes (page: readonly LoggedEvent[]): number {
  let bytes = 0
  for (const event of page) bytes += Buffer.byteLength(event.payload)
  return bytes
}
