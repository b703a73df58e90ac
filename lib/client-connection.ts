import type { RawData, WebSocket } from 'ws'
import type { Hub, HubClient } from './hub.js'
import { CloseCode, ErrorCode, PROTOCOL_VERSION, parseClientFrame, type ClientFrame, type ServerControlFrame } from './protocol.js'
import { corked, writeSharedFrame, type SharedFrame } from './shared-frame.js'
import type { Principal } from './types.js'

export interface ClientConnectionOptions {
  /** Bytes a socket may have queued unsent before it is cut off as a slow consumer. */
  maxBufferedBytes: number
  /** Invalid frames tolerated (each answered with an error frame) before the socket is closed. */
  maxInvalidFrames: number
  /** How long a cut-off socket gets to take its close frame before it is destroyed. */
  closeGraceMs: number
  heartbeatMs: number
}

const TEXT = { binary: false } as const
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
  readonly #allowed: ReadonlySet<string>
  #invalidFrames = 0
  #closed = false
  /** Set by the heartbeat each round, cleared by a pong. */
  awaitingPong = false

  constructor (socket: WebSocket, readonly principal: Principal, hub: Hub, options: ClientConnectionOptions) {
    this.#socket = socket
    this.#hub = hub
    this.#options = options
    this.#allowed = new Set(principal.teams)
    // Attached before anything awaits, so no early frame is missed.
    socket.on('message', this.#onMessage)
    socket.on('pong', this.#onPong)
    socket.once('close', this.#onClose)
    socket.on('error', this.#onError)
  }

  get closed (): boolean { return this.#closed }
  wants (teamId: string): boolean { return this.#teams.has(teamId) }

  /** Greets the client and subscribes it to `teams`, resuming each from `since` where given. */
  start (teams: readonly string[], since: ReadonlyMap<string, number>): void {
    this.sendControl({ type: 'welcome', protocol: PROTOCOL_VERSION, userId: this.principal.userId, teams: this.principal.teams, heartbeatMs: this.#options.heartbeatMs })
    this.#subscribe(teams, since)
  }

  batch (fn: () => void): void {
    corked(this.#socket, fn)
  }

  sendEvent (frame: SharedFrame): void {
    if (this.#writable()) writeSharedFrame(this.#socket, frame)
  }

  sendControl (frame: ServerControlFrame): void {
    if (this.#writable()) this.#socket.send(JSON.stringify(frame), TEXT)
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

  close (code: number, reason: string): void {
    if (this.#socket.readyState === OPEN) this.#socket.close(code, reason)
  }

  #writable (): boolean {
    if (this.#closed || this.#socket.readyState !== OPEN) return false
    if (this.#socket.bufferedAmount <= this.#options.maxBufferedBytes) return true
    this.#cutOff()
    return false
  }

  #cutOff (): void {
    this.#leaveAll()
    this.#socket.close(CloseCode.SLOW_CONSUMER, 'slow consumer: reconnect and resume')
    // The close frame waits behind the backlog; a client that never reads never gets it.
    setTimeout(() => { this.#socket.terminate() }, this.#options.closeGraceMs).unref()
  }

  #subscribe (teams: readonly string[], since: ReadonlyMap<string, number> | Readonly<Record<string, number>>): void {
    for (const teamId of teams) {
      if (!this.#allowed.has(teamId)) {
        this.#error(ErrorCode.FORBIDDEN_TEAM, `Not a member of team ${teamId}`)
        continue
      }
      this.#teams.add(teamId)
      const from = since instanceof Map ? since.get(teamId) : (since as Record<string, number>)[teamId]
      this.#hub.join(this, teamId, from).catch(this.#onError)
    }
  }

  #dispatch (frame: ClientFrame): void {
    switch (frame.type) {
      case 'subscribe':
        this.#subscribe(frame.teams, frame.since ?? {})
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
    }
  }

  #error (code: ErrorCode, message: string): void {
    this.sendControl({ type: 'error', code, message })
  }

  #invalid (code: ErrorCode, message: string): void {
    this.#error(code, message)
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
    if (isBinary) {
      this.#invalid(ErrorCode.BINARY_UNSUPPORTED, 'Binary frames are not supported; send JSON text frames')
      return
    }
    const parsed = parseClientFrame(data.toString())
    if (parsed.ok) this.#dispatch(parsed.frame)
    else this.#invalid(parsed.code, parsed.message)
  }

  readonly #onPong = (): void => { this.awaitingPong = false }

  readonly #onClose = (): void => { this.#leaveAll() }

  // A socket error (bad frame at the protocol level, reset) ends this connection only; ws closes it.
  readonly #onError = (): void => {}
}
