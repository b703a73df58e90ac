import WebSocket from 'ws'
import type { WebSocketConstructor, WebSocketLike, WebSocketUpgradeOptions } from '../../client/index.js'
import { checkedServerFrame, protocolViolation } from './ws-client.js'

/**
 * Switches a test flips to put a client SDK's sockets in trouble, on real sockets to a real
 * server: refuse new connections, stop hearing what the server sends, hear everything twice.
 */
export interface SocketControl {
  /** The WebSocket class to give the SDK. */
  WebSocket: WebSocketConstructor
  /** New sockets go to a closed port (the server looks unreachable) while true. */
  blocked: boolean
  /** Every frame is handed to the SDK twice while true. */
  duplicate: boolean
  /** Frames for which this returns true are dropped before the SDK sees them. */
  drop: ((frame: Record<string, unknown>) => boolean) | undefined
  /**
   * A frame for which this returns true is held back, with every later frame of its socket (a
   * link that is slow, not lossy: the order is kept), until `release()`.
   */
  hold: ((frame: Record<string, unknown>) => boolean) | undefined
  /** Hands the held frames to the SDK, in order; `hold` applies again to frames arriving after. */
  release (): void
  /** URL of every socket the SDK opened, in order. */
  readonly urls: string[]
  /** What the SDK passed for every socket it opened, in order. */
  readonly opened: Array<{ url: string, protocols: string | string[] | undefined, options: WebSocketUpgradeOptions | undefined }>
  /** Every frame that arrived on any socket (dropped or not), parsed. */
  readonly received: Array<Record<string, unknown>>
  /** The open sockets make the SDK hear nothing more (a dead link the server does not see). */
  deafen (): void
  /** Resolves once a frame matching `predicate` has arrived at the socket level. */
  arrived (what: string, predicate: (frame: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<void>
}

// Port 1 on loopback: nothing listens there, so a connect is refused at once.
const UNREACHABLE = 'ws://127.0.0.1:1/realtime'

/**
 * `supportsHeaders` (default true) is what the class tells the SDK: true, it takes
 * `{ headers }` like the ws package (the Node path); false, only `(url, protocols)` like a
 * browser's WebSocket, so the SDK sends the credential as a subprotocol entry.
 */
export function controlledWebSocket (options: { supportsHeaders?: boolean } = {}): SocketControl {
  const sockets = new Set<ControlledSocket>()
  const waiters = new Set<() => void>()
  const control: SocketControl = {
    WebSocket: undefined as unknown as WebSocketConstructor,
    blocked: false,
    duplicate: false,
    drop: undefined,
    hold: undefined,
    urls: [],
    opened: [],
    received: [],
    deafen () { for (const socket of sockets) socket.deaf = true },
    release () { for (const socket of sockets) socket.release() },
    async arrived (what, predicate, timeoutMs = 10_000) {
      if (control.received.some(predicate)) return
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => { waiters.delete(check); reject(new Error(`timed out waiting for ${what} to arrive`)) }, timeoutMs)
        const check = (): void => {
          if (!control.received.some(predicate)) return
          clearTimeout(timer)
          waiters.delete(check)
          resolve()
        }
        waiters.add(check)
      })
    }
  }

  class ControlledSocket implements WebSocketLike {
    onopen: WebSocketLike['onopen'] = null
    onmessage: WebSocketLike['onmessage'] = null
    onclose: WebSocketLike['onclose'] = null
    onerror: WebSocketLike['onerror'] = null
    deaf = false
    /** Frames held back (`hold`), in arrival order; undefined while nothing is. */
    #held: string[] | undefined
    readonly #ws: WebSocket

    static readonly supportsHeaders = options.supportsHeaders ?? true

    constructor (url: string, protocols?: string | string[], upgrade?: WebSocketUpgradeOptions) {
      control.urls.push(url)
      control.opened.push({ url, protocols, options: upgrade })
      // A browser-like class has no third argument: whatever the SDK put there is not sent.
      const headers = ControlledSocket.supportsHeaders ? upgrade?.headers : undefined
      this.#ws = new WebSocket(control.blocked ? UNREACHABLE : url, protocols, { headers })
      sockets.add(this)
      this.#ws.on('open', () => this.onopen?.({}))
      this.#ws.on('message', (data) => {
        const text = data.toString()
        let frame: Record<string, unknown>
        try {
          frame = checkedServerFrame(text)
        } catch (err) {
          protocolViolation(err)
          return
        }
        control.received.push(frame)
        for (const check of [...waiters]) check()
        if (this.deaf || control.drop?.(frame) === true) return
        if (this.#held === undefined && control.hold?.(frame) === true) this.#held = []
        if (this.#held !== undefined) {
          this.#held.push(text)
          return
        }
        this.#deliver(text)
      })
      this.#ws.on('close', (code, reason) => {
        sockets.delete(this)
        // What was held arrived before the close: the SDK hears it first.
        this.release()
        this.onclose?.({ code, reason: reason.toString() })
      })
      this.#ws.on('error', (err) => this.onerror?.(err))
    }

    #deliver (text: string): void {
      this.onmessage?.({ data: text })
      if (control.duplicate) this.onmessage?.({ data: text })
    }

    release (): void {
      const held = this.#held ?? []
      this.#held = undefined
      for (const text of held) this.#deliver(text)
    }

    get readyState (): number { return this.#ws.readyState }
    send (data: string): void { this.#ws.send(data) }
    close (code?: number, reason?: string): void { this.#ws.close(code, reason) }
  }

  control.WebSocket = ControlledSocket
  return control
}

/** Resolves when `on(type)` delivers a value matching `predicate`; fails after `timeoutMs`. */
export async function nextEvent<T> (
  emitter: { on (type: any, listener: (value: any) => void): () => void },
  type: string,
  predicate: (value: T) => boolean = () => true,
  timeoutMs = 10_000
): Promise<T> {
  return await new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => { off(); reject(new Error(`timed out waiting for a ${type} event`)) }, timeoutMs)
    const off = emitter.on(type, (value: T) => {
      if (!predicate(value)) return
      clearTimeout(timer)
      off()
      resolve(value)
    })
  })
}

/**
 * Waits until `check()` holds, re-checked whenever `emitter` emits one of `types` (and once at
 * the start): waiting on events, not on time.
 */
export async function until (
  what: string,
  emitter: { on (type: any, listener: (value: any) => void): () => void },
  types: string[],
  check: () => boolean,
  timeoutMs = 10_000
): Promise<void> {
  if (check()) return
  await new Promise<void>((resolve, reject) => {
    const offs: Array<() => void> = []
    const done = (err?: Error): void => {
      clearTimeout(timer)
      for (const off of offs) off()
      if (err === undefined) resolve()
      else reject(err)
    }
    const timer = setTimeout(() => { done(new Error(`timed out waiting for ${what}`)) }, timeoutMs)
    for (const type of types) offs.push(emitter.on(type, () => { if (check()) done() }))
  })
}

/** Resolves as `promise` does; fails when it has not settled in time. */
export async function within<T> (promise: Promise<T>, what: string, timeoutMs = 10_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const late = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`${what}: still pending after ${timeoutMs} ms`)) }, timeoutMs) })
  try {
    return await Promise.race([promise, late])
  } finally {
    clearTimeout(timer)
  }
}

/** The error `promise` rejects with; fails when it resolves, or has not settled in time. */
export async function rejectionOf (promise: Promise<unknown>, timeoutMs = 10_000): Promise<unknown> {
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`still pending after ${timeoutMs} ms`)) }, timeoutMs)
    promise.then(() => { clearTimeout(timer); reject(new Error('resolved; a rejection was expected')) }, (err: unknown) => { clearTimeout(timer); resolve(err) })
  })
}
