import type { RawData, WebSocket } from 'ws'
import type { Hub, HubClient } from './hub.js'
import { CloseCode, ErrorCode, PROTOCOL_VERSION, type ClientFrame, type ServerControlFrame } from '../protocol/index.js'
import { parseClientFrame } from './frame-parser.js'
import { backlogged, corked, SharedFrame, whenDrained, writeSharedFrame } from './shared-frame.js'
import { TokenBucket } from './token-bucket.js'
import type { LoggedEvent, Principal } from './types.js'
import { connectionClosed, connectionOpened, eventsReplayed, frameRefused, resyncSent } from './diagnostics.js'
import { silentLogger, type Logger } from './logger.js'

export interface ClientConnectionOptions {
  /** Bytes a socket may have queued unsent before it is cut off as a slow consumer. */
  maxBufferedBytes: number
  /** Invalid frames tolerated (each answered with an error frame) before the socket is closed. */
  maxInvalidFrames: number
  /** How long a cut-off socket gets to take its close frame before it is destroyed. */
  closeGraceMs: number
  /** Protocol ping interval; also how long a replay waits for the socket to take a page before cutting it off. */
  heartbeatMs: number
  /** Client frames per second, steady rate; beyond it frames are refused with `rate_limited`. */
  maxFramesPerSecond: number
  /** Client frames a connection may send at once above the steady rate. */
  frameBurst: number
  /** Bytes of replayed events per minute per user; a resume beyond it is told to resync. */
  replayBytesPerMinute: number
  /** `refresh` frames a connection may send per minute (a token bucket of this size). */
  maxRefreshesPerMinute: number
}

/**
 * Checks a bare credential (a `refresh` frame's): the principal it stands for, or null when it
 * is refused. Never rejects. Undefined: the host gave none, and `refresh` is unsupported.
 */
export type CheckToken = (token: string) => Promise<Principal | null>

/** A CheckToken of the whole instance, told the address each connection came from. */
export type CheckTokenFrom = (token: string, ip: string) => Promise<Principal | null>

/** What a connection is given besides its options: its budget, its credential check, its log. */
export interface ConnectionContext {
  /** The user's replay budget, shared by all of the user's connections on this instance. */
  replayBudget: TokenBucket
  checkToken?: CheckToken
  /** The instance's logger; the connection logs through a child of it (connection id, user). */
  logger?: Logger
  /** The instance's id, in the connection's diagnostics messages. */
  instance?: string
}

let lastConnectionId = 0

const TEXT = { binary: false } as const

/** The `expiresAt` member of welcome and refreshed: present only when the principal has one. */
function expiry (expiresAt: number | undefined): { expiresAt?: number } {
  return expiresAt === undefined ? {} : { expiresAt: Math.floor(expiresAt) }
}
const OPEN = 1

/**
 * One client's WebSocket: reads its frames, subscribes it to teams through the hub, writes
 * events to it, and cuts it off when its unsent backlog passes `maxBufferedBytes` so a client
 * that does not read can never hold the server's memory or make others wait.
 */
export class ClientConnection implements HubClient {
  readonly #socket: WebSocket
  readonly #hub: Hub
  readonly #options: ClientConnectionOptions
  readonly #teams = new Set<string>()
  #principal: Principal
  #allowed: Set<string>
  readonly #frames: TokenBucket
  readonly #refreshes: TokenBucket
  readonly #checkToken: CheckToken | undefined
  /** Refreshes are applied in the order their frames came, however long each check takes. */
  #refreshed: Promise<void> = Promise.resolve()
  /** This instance's id of the connection: in its log lines and diagnostics. */
  readonly id: string
  readonly #log: Logger
  readonly #instance: string | undefined
  readonly #openedAt = performance.now()
  // Counted on the event path (two additions per frame), logged once at close.
  #framesSent = 0
  #bytesSent = 0
  #slowConsumer = false
  /** The user's replay budget, shared by all of the user's connections on this instance. */
  readonly #replayBytes: TokenBucket
  #invalidFrames = 0
  #closed = false
  /** Resolves when the socket has closed, however it closed. */
  readonly ended: Promise<void>
  readonly #ended: () => void
  /** Set by the heartbeat each round, cleared by a pong. */
  awaitingPong = false

  constructor (socket: WebSocket, principal: Principal, hub: Hub, options: ClientConnectionOptions, context: ConnectionContext) {
    this.#socket = socket
    this.id = (++lastConnectionId).toString(36)
    this.#log = (context.logger ?? silentLogger).child({ connectionId: this.id, userId: principal.userId })
    this.#hub = hub
    this.#options = options
    this.#principal = principal
    this.#allowed = new Set(principal.teams)
    this.#frames = new TokenBucket(options.frameBurst, options.maxFramesPerSecond)
    this.#refreshes = new TokenBucket(options.maxRefreshesPerMinute, options.maxRefreshesPerMinute / 60)
    this.#checkToken = context.checkToken
    this.#instance = context.instance
    this.#replayBytes = context.replayBudget
    // Attached before anything awaits, so no early frame is missed.
    socket.on('message', this.#onMessage)
    socket.on('pong', this.#onPong)
    let ended!: () => void
    this.ended = new Promise((resolve) => { ended = resolve })
    this.#ended = ended
    socket.once('close', this.#onClose)
    socket.on('error', this.#onError)
  }

  get closed (): boolean { return this.#closed }
  /** Who the connection is for: the upgrade's principal, or the last accepted refresh's. */
  get principal (): Principal { return this.#principal }
  wants (teamId: string): boolean { return this.#teams.has(teamId) }

  /** Greets the client and subscribes it to `teams`, resuming each from `since` where given. */
  start (teams: readonly string[], since: ReadonlyMap<string, number>): void {
    const { userId, teams: allowed, expiresAt } = this.#principal
    this.#log.info({ teams: teams.length }, 'atlas: connection opened')
    if (connectionOpened.hasSubscribers) connectionOpened.publish({ instance: this.#instance, connectionId: this.id, userId })
    this.sendControl({ type: 'welcome', protocol: PROTOCOL_VERSION, userId, teams: [...allowed], heartbeatMs: this.#options.heartbeatMs, ...expiry(expiresAt) })
    this.#subscribe(teams, since)
  }

  sendReplayed (events: readonly LoggedEvent[]): number {
    if (this.#closed || this.#socket.readyState !== OPEN) return 0
    // No slow-consumer check here: the replay writes only what the socket's own buffer takes
    // and waits for it to drain (drained()), so its backlog stays within one buffer's worth.
    let written = 0
    corked(this.#socket, () => {
      for (const event of events) {
        const frame = new SharedFrame(event.payload)
        writeSharedFrame(this.#socket, frame)
        this.#counted(frame)
        written++
        if (backlogged(this.#socket)) break
      }
    })
    if (eventsReplayed.hasSubscribers) eventsReplayed.publish({ instance: this.#instance, count: written })
    return written
  }

  async drained (): Promise<boolean> {
    if (this.#closed) return false
    if (!backlogged(this.#socket)) return true
    if (await whenDrained(this.#socket, this.#options.heartbeatMs)) return !this.#closed
    // Took nothing for a whole heartbeat: not a reader that keeps up.
    if (!this.#closed) this.#cutOff()
    return false
  }

  chargeReplay (bytes: number): boolean {
    return this.#replayBytes.take(bytes)
  }

  sendEvent (frame: SharedFrame): void {
    if (!this.#writable()) return
    writeSharedFrame(this.#socket, frame)
    this.#counted(frame)
  }

  sendControl (frame: ServerControlFrame): void {
    if (!this.#writable()) return
    const text = JSON.stringify(frame)
    this.#socket.send(text, TEXT)
    this.#framesSent++
    this.#bytesSent += text.length
    switch (frame.type) {
      case 'subscribed':
        if (frame.replayed > 0) this.#log.info({ teamId: frame.teamId, seq: frame.seq, replayed: frame.replayed }, 'atlas: resumed')
        else this.#log.debug({ teamId: frame.teamId, seq: frame.seq }, 'atlas: subscribed')
        break
      case 'resync':
        this.#log.info({ teamId: frame.teamId, seq: frame.seq, reason: frame.reason }, 'atlas: told to resync')
        if (resyncSent.hasSubscribers) resyncSent.publish({ instance: this.#instance, reason: frame.reason })
        break
    }
  }

  #counted (frame: SharedFrame): void {
    this.#framesSent++
    this.#bytesSent += frame.bytes.length
  }

  /** Heartbeat round: returns false when the previous ping was never answered. */
  ping (): boolean {
    if (this.awaitingPong) {
      this.#socket.terminate()
      return false
    }
    this.awaitingPong = true
    if (this.#socket.readyState === OPEN) this.#socket.ping()
    return true
  }

  /**
   * The principal lost a team (the host revoked the membership): its subscription ends with
   * `unsubscribed` reason `revoked`, and subscribing to it again is refused.
   */
  revokeTeam (teamId: string): void {
    if (!this.#allowed.delete(teamId)) return
    this.#principal = { ...this.#principal, teams: [...this.#allowed] }
    this.#endRevoked(teamId)
  }

  close (code: number, reason: string): void {
    if (this.#socket.readyState === OPEN) this.#socket.close(code, reason)
  }

  /** Destroys the connection at once, without a close handshake. */
  terminate (): void {
    this.#socket.terminate()
  }

  #writable (): boolean {
    if (this.#closed || this.#socket.readyState !== OPEN) return false
    if (this.#socket.bufferedAmount <= this.#options.maxBufferedBytes) return true
    this.#cutOff()
    return false
  }

  #cutOff (): void {
    this.#slowConsumer = true
    this.#log.warn({ bufferedBytes: this.#socket.bufferedAmount }, 'atlas: slow consumer cut off')
    this.#leaveAll()
    this.#socket.close(CloseCode.SLOW_CONSUMER, 'slow consumer: reconnect and resume')
    // The close frame waits behind the backlog; a client that never reads never gets it.
    setTimeout(() => { this.#socket.terminate() }, this.#options.closeGraceMs).unref()
  }

  #subscribe (teams: readonly string[], since: ReadonlyMap<string, number>): void {
    for (const teamId of teams) {
      if (!this.#allowed.has(teamId)) {
        // Counted as invalid: a client has no honest reason to keep naming teams it is not in.
        this.#invalid(ErrorCode.FORBIDDEN_TEAM, `Not a member of team ${teamId}`, teamId)
        if (this.#socket.readyState !== OPEN) return
        continue
      }
      this.#teams.add(teamId)
      this.#hub.join(this, teamId, since.get(teamId)).catch(this.#joinFailed)
    }
  }

  #dispatch (frame: ClientFrame): void {
    switch (frame.type) {
      case 'subscribe':
        // A Map, never the parsed object: a team called `constructor` or `__proto__` would
        // otherwise read Object.prototype's members as its seq.
        this.#subscribe(frame.teams, new Map(Object.entries(frame.since ?? {})))
        break
      case 'unsubscribe':
        for (const teamId of frame.teams) {
          this.#teams.delete(teamId)
          this.#hub.leave(this, teamId)
          this.sendControl({ type: 'unsubscribed', teamId })
        }
        break
      case 'ping':
        this.sendControl(frame.id === undefined ? { type: 'pong' } : { type: 'pong', id: frame.id })
        break
      case 'refresh':
        this.#refresh(frame.token)
        break
    }
  }

  #refresh (token: string): void {
    if (!this.#refreshes.take()) {
      this.#invalid(ErrorCode.RATE_LIMITED, `Too many refresh frames: at most ${this.#options.maxRefreshesPerMinute} per minute`)
      return
    }
    const checkToken = this.#checkToken
    if (checkToken === undefined) {
      this.#error(ErrorCode.REFRESH_UNSUPPORTED, 'This server cannot refresh a credential on an open socket: reconnect with the new one')
      return
    }
    // Checked at once (concurrently with other frames), applied in frame order.
    const checked = checkToken(token)
    this.#refreshed = this.#refreshed.then(async () => { this.#applyRefresh(await checked) })
  }

  #applyRefresh (principal: Principal | null): void {
    if (this.#closed || this.#socket.readyState !== OPEN) return
    // A credential for someone else is no refresh of this one: the socket's events are its user's.
    if (principal === null || principal.userId !== this.#principal.userId) {
      this.close(CloseCode.UNAUTHORIZED, 'unauthorized: refresh refused')
      return
    }
    this.#principal = principal
    this.#allowed = new Set(principal.teams)
    for (const teamId of [...this.#teams]) {
      if (!this.#allowed.has(teamId)) this.#endRevoked(teamId)
    }
    this.sendControl({ type: 'refreshed', teams: [...principal.teams], ...expiry(principal.expiresAt) })
  }

  #endRevoked (teamId: string): void {
    if (!this.#teams.delete(teamId)) return
    this.#hub.leave(this, teamId)
    this.sendControl({ type: 'unsubscribed', teamId, reason: 'revoked' })
  }

  #error (code: ErrorCode, message: string, teamId?: string): void {
    this.sendControl(teamId === undefined ? { type: 'error', code, message } : { type: 'error', code, message, teamId })
  }

  #invalid (code: ErrorCode, message: string, teamId?: string): void {
    if (frameRefused.hasSubscribers) frameRefused.publish({ instance: this.#instance, code })
    this.#error(code, message, teamId)
    if (++this.#invalidFrames > this.#options.maxInvalidFrames) {
      this.close(CloseCode.POLICY_VIOLATION, 'too many invalid frames')
    }
  }

  #leaveAll (): void {
    this.#closed = true
    this.#hub.leaveAll(this, this.#teams)
    this.#teams.clear()
  }

  readonly #onMessage = (data: RawData, isBinary: boolean): void => {
    // Closing (too many invalid frames, cut off): what the client still sends is not even parsed.
    if (this.#closed || this.#socket.readyState !== OPEN) return
    if (!this.#frames.take()) {
      this.#invalid(ErrorCode.RATE_LIMITED, `Too many frames: at most ${this.#options.maxFramesPerSecond} per second`)
      return
    }
    if (isBinary) {
      this.#invalid(ErrorCode.BINARY_UNSUPPORTED, 'Binary frames are not supported; send JSON text frames')
      return
    }
    const parsed = parseClientFrame(data.toString())
    if (parsed.ok) this.#dispatch(parsed.frame)
    else this.#invalid(parsed.code, parsed.message)
  }

  readonly #onPong = (): void => { this.awaitingPong = false }

  readonly #onClose = (code: number): void => {
    this.#leaveAll()
    const durationMs = Math.round(performance.now() - this.#openedAt)
    const closed = { code, durationMs, framesSent: this.#framesSent, bytesSent: this.#bytesSent, slowConsumer: this.#slowConsumer }
    this.#log.info(closed, 'atlas: connection closed')
    if (connectionClosed.hasSubscribers) connectionClosed.publish({ instance: this.#instance, connectionId: this.id, userId: this.#principal.userId, ...closed })
    this.#ended()
  }

  /**
   * A join that failed (the database could not be read): the client would wait for a
   * `subscribed` that never comes. It is told by closing with 1011, and reconnects and resumes.
   */
  readonly #joinFailed = (err: unknown): void => {
    this.#log.error({ err }, 'atlas: subscribing failed; closing the connection with 1011')
    this.close(CloseCode.INTERNAL_ERROR, 'internal error: reconnect and resume')
  }

  // A socket error (bad frame at the protocol level, reset) ends this connection only; ws closes it.
  readonly #onError = (err: Error): void => {
    this.#log.debug({ err }, 'atlas: socket error')
  }
}
