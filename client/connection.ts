import { Backoff, type BackoffOptions } from './backoff.js'
import { Emitter } from './emitter.js'
import { CloseCode } from '../protocol/constants.js'
import type { ClientFrame, ServerFrame } from '../protocol/schemas.js'
import { parseServerFrame } from './frames.js'
import { OPEN, openSocket, resolveWebSocket, type WebSocketConstructor, type WebSocketLike } from './socket.js'

export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'closed'

export interface HeartbeatOptions {
  /** How often a `ping` frame is sent while open, in ms (default 20000). */
  intervalMs?: number
  /** How long the answer (or any frame) may take before the socket is declared dead (default 10000). */
  timeoutMs?: number
}

/** What to do after a socket closed: try again after the backoff, or stop for good. */
export type CloseVerdict = 'retry' | 'stop'

export interface ConnectionOptions {
  /** The URL of each attempt; asked again every time because the resume position moves. Never put a credential in it. */
  url: () => string | Promise<string>
  /**
   * The credential of each attempt (undefined: none), sent in an Authorization header where the
   * WebSocket class can set one, else as a `Sec-WebSocket-Protocol` entry.
   */
  token?: () => string | undefined | Promise<string | undefined>
  /**
   * Asked after every close that `close()` did not cause, before `disconnect` is emitted:
   * 'stop' ends the connection (a refused credential with no fresh one). Default: retry.
   */
  onClose?: (info: { code: number, reason: string }) => CloseVerdict | Promise<CloseVerdict>
  WebSocket?: WebSocketConstructor
  reconnect?: BackoffOptions
  heartbeat?: HeartbeatOptions
  /** How long an attempt may wait for the server's `welcome` before it is abandoned (default 10000). */
  connectTimeoutMs?: number
}

export interface DisconnectInfo {
  code: number
  reason: string
  /**
   * False when this is the end: the client gave up after `reconnect.maxAttempts`, or its
   * credential was refused and no fresh one came.
   */
  willReconnect: boolean
}

export interface ReconnectInfo {
  /** 1 for the first retry after a drop, counting up until an attempt is welcomed. */
  attempt: number
  delayMs: number
}

export interface ConnectionEvents {
  state: ConnectionState
  frame: ServerFrame
  disconnect: DisconnectInfo
  reconnect: ReconnectInfo
}

type Timer = ReturnType<typeof setTimeout>

/**
 * One logical connection to /realtime that survives its sockets: it opens a socket, counts it
 * as `open` once the server's `welcome` arrived, and when the socket closes for any reason
 * other than `close()` (a 1001 restart, a 4008 slow-consumer cut, a network drop, a dead link
 * found by the heartbeat) it opens a new one after a jittered, bounded backoff.
 */
export class RealtimeConnection extends Emitter<ConnectionEvents> {
  readonly #options: ConnectionOptions
  readonly #backoff: Backoff
  readonly #intervalMs: number
  readonly #timeoutMs: number
  readonly #connectTimeoutMs: number
  #state: ConnectionState = 'closed'
  #socket: WebSocketLike | undefined
  /** Bumped for every socket; callbacks of an older socket are ignored. */
  #generation = 0
  #stopped = true
  #retryTimer: Timer | undefined
  #welcomeTimer: Timer | undefined
  #pingTimer: ReturnType<typeof setInterval> | undefined
  #pongDeadline: Timer | undefined
  #pingId = 0

  constructor (options: ConnectionOptions) {
    super()
    this.#options = options
    this.#backoff = new Backoff(options.reconnect)
    this.#intervalMs = options.heartbeat?.intervalMs ?? 20_000
    this.#timeoutMs = options.heartbeat?.timeoutMs ?? 10_000
    this.#connectTimeoutMs = options.connectTimeoutMs ?? 10_000
  }

  get state (): ConnectionState { return this.#state }

  connect (): void {
    if (!this.#stopped) return
    this.#stopped = false
    this.#backoff.reset()
    this.#setState('connecting')
    void this.#attempt()
  }

  /** Closes for good (until `connect` is called again); no reconnect follows. */
  close (): void {
    this.#shutDown()
    this.#setState('closed')
  }

  /**
   * Stops for good like `close()`, but as a failure: a `disconnect` with `willReconnect: false`
   * tells why. Returns false (and does nothing) when already stopped.
   */
  stop (code: number, reason: string): boolean {
    if (this.#stopped) return false
    this.#shutDown()
    this.emit('disconnect', { code, reason, willReconnect: false })
    this.#setState('closed')
    return true
  }

  #shutDown (): void {
    this.#stopped = true
    clearTimeout(this.#retryTimer)
    const socket = this.#socket
    this.#generation++
    this.#teardown()
    if (socket !== undefined) {
      try { socket.close(CloseCode.NORMAL, 'client closed') } catch {}
    }
  }

  /** Sends a frame if a socket is open; returns whether it was sent. */
  send (frame: ClientFrame): boolean {
    const socket = this.#socket
    if (socket === undefined || socket.readyState !== OPEN) return false
    socket.send(JSON.stringify(frame))
    return true
  }

  async #attempt (): Promise<void> {
    const generation = ++this.#generation
    let socket: WebSocketLike
    try {
      const [WebSocketClass, url, token] = await Promise.all([resolveWebSocket(this.#options.WebSocket), this.#options.url(), this.#options.token?.()])
      if (generation !== this.#generation) return
      socket = openSocket(WebSocketClass, url, token)
    } catch (err) {
      if (generation === this.#generation) this.#closed(generation, 1006, (err as Error)?.message ?? String(err))
      return
    }
    this.#socket = socket
    socket.onmessage = (event) => {
      if (generation !== this.#generation) return
      this.#alive()
      const frame = parseServerFrame(event.data)
      if (frame === undefined) return
      if (frame.type === 'welcome') this.#welcomed(generation)
      this.emit('frame', frame)
    }
    socket.onclose = (event) => { this.#closed(generation, event.code, event.reason) }
    // An error is always followed by a close, which is where recovery happens.
    socket.onerror = () => {}
    this.#welcomeTimer = setTimeout(() => { this.#abandon(generation, 'no welcome from the server in time') }, this.#connectTimeoutMs)
  }

  #welcomed (generation: number): void {
    clearTimeout(this.#welcomeTimer)
    this.#backoff.reset()
    this.#setState('open')
    // Browsers cannot see protocol-level pings, so liveness is checked with app-level ones.
    this.#pingTimer = setInterval(() => {
      this.send({ type: 'ping', id: ++this.#pingId })
      this.#pongDeadline ??= setTimeout(() => { this.#abandon(generation, 'heartbeat timeout') }, this.#timeoutMs)
    }, this.#intervalMs)
  }

  /** Any frame proves the link still carries data. */
  #alive (): void {
    clearTimeout(this.#pongDeadline)
    this.#pongDeadline = undefined
  }

  /**
   * Gives up on a socket that seems dead. Its close event is not awaited: on a dead link a
   * browser can take minutes to report it.
   */
  #abandon (generation: number, reason: string): void {
    if (generation !== this.#generation) return
    const socket = this.#socket
    if (socket !== undefined) {
      socket.onmessage = socket.onclose = null
      try { socket.close(CloseCode.HEARTBEAT_TIMEOUT, reason) } catch {}
    }
    this.#closed(generation, CloseCode.HEARTBEAT_TIMEOUT, reason)
  }

  #closed (generation: number, code: number, reason: string): void {
    if (generation !== this.#generation) return
    const next = ++this.#generation
    this.#teardown()
    if (this.#stopped) return
    let verdict: CloseVerdict | Promise<CloseVerdict>
    try {
      verdict = this.#options.onClose?.({ code, reason }) ?? 'retry'
    } catch {
      verdict = 'retry'
    }
    if (typeof verdict === 'string') {
      this.#after(code, reason, verdict)
      return
    }
    void verdict.catch(() => 'retry' as const).then((decided) => {
      // close() or connect() happened meanwhile: that decided already.
      if (next !== this.#generation || this.#stopped) return
      this.#after(code, reason, decided)
    })
  }

  #after (code: number, reason: string, verdict: CloseVerdict): void {
    const delayMs = verdict === 'stop' ? undefined : this.#backoff.next()
    if (delayMs === undefined) {
      this.#stopped = true
      this.emit('disconnect', { code, reason, willReconnect: false })
      this.#setState('closed')
      return
    }
    this.emit('disconnect', { code, reason, willReconnect: true })
    this.#setState('reconnecting')
    this.emit('reconnect', { attempt: this.#backoff.attempt, delayMs })
    this.#retryTimer = setTimeout(() => { void this.#attempt() }, delayMs)
  }

  #teardown (): void {
    clearTimeout(this.#welcomeTimer)
    clearInterval(this.#pingTimer)
    this.#alive()
    this.#pingTimer = undefined
    this.#socket = undefined
  }

  #setState (state: ConnectionState): void {
    if (state === this.#state) return
    this.#state = state
    this.emit('state', state)
  }
}
