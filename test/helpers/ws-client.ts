import WebSocket from 'ws'
import type { TaskEvent } from '../../lib/types.js'

export interface ServerFrame { type: string, [key: string]: unknown }

/**
 * A real WebSocket client that records every frame, for tests: `events` holds task events in
 * arrival order, `frames` everything; `waitFor` resolves when a predicate over what arrived
 * holds (re-checked on each frame, no polling).
 */
export class TestClient {
  readonly frames: ServerFrame[] = []
  readonly events: TaskEvent[] = []
  readonly socket: WebSocket
  readonly closed: Promise<{ code: number, reason: string }>
  #waiters = new Set<() => void>()

  constructor (url: string, options: WebSocket.ClientOptions = {}) {
    this.socket = new WebSocket(url, options)
    this.socket.on('message', (data) => {
      const frame = JSON.parse(data.toString()) as ServerFrame
      this.frames.push(frame)
      if (frame.type.startsWith('task.')) this.events.push(frame as unknown as TaskEvent)
      for (const check of this.#waiters) check()
    })
    this.closed = new Promise((resolve) => {
      this.socket.once('close', (code, reason) => {
        resolve({ code, reason: reason.toString() })
        for (const check of this.#waiters) check()
      })
    })
    this.socket.on('error', () => {})
  }

  /** Resolves once the upgrade succeeded; rejects with the HTTP status when it was refused. */
  async opened (): Promise<void> {
    if (this.socket.readyState === WebSocket.OPEN) return
    await new Promise<void>((resolve, reject) => {
      this.socket.once('open', () => resolve())
      this.socket.once('unexpected-response', (_req, res) => reject(Object.assign(new Error(`upgrade refused: ${res.statusCode}`), { statusCode: res.statusCode })))
      this.socket.once('error', reject)
    })
  }

  /** Waits until `predicate()` is true, failing after `timeoutMs` with `what` in the message. */
  async waitFor (what: string, predicate: () => boolean, timeoutMs = 10_000): Promise<void> {
    if (predicate()) return
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(check)
        reject(new Error(`timed out waiting for ${what}; got ${this.frames.length} frames, last: ${JSON.stringify(this.frames.at(-1))}`))
      }, timeoutMs)
      const check = (): void => {
        if (!predicate()) return
        clearTimeout(timer)
        this.#waiters.delete(check)
        resolve()
      }
      this.#waiters.add(check)
    })
  }

  async waitForFrame (type: string, timeoutMs?: number): Promise<ServerFrame> {
    let found: ServerFrame | undefined
    await this.waitFor(`a ${type} frame`, () => (found = this.frames.find((f) => f.type === type)) !== undefined, timeoutMs)
    return found as ServerFrame
  }

  /** Waits for `subscribed` (or `resync`) frames for every team given. */
  async ready (teams: readonly string[], timeoutMs?: number): Promise<void> {
    await this.waitFor(`subscribed to ${teams.join(',')}`, () => teams.every((team) =>
      this.frames.some((f) => (f.type === 'subscribed' || f.type === 'resync') && f.teamId === team)), timeoutMs)
  }

  lastSeq (teamId: string): number {
    return this.events.filter((e) => e.teamId === teamId).reduce((max, e) => Math.max(max, e.seq), 0)
  }

  send (frame: unknown): void { this.socket.send(typeof frame === 'string' ? frame : JSON.stringify(frame)) }

  async close (): Promise<void> {
    if (this.socket.readyState === WebSocket.CLOSED) return
    this.socket.close()
    await this.closed
  }
}

let pingCounter = 0

/**
 * A ping/pong round trip on the protocol level: when it resolves, every frame the server wrote
 * to this socket before answering has arrived (use it to prove something did NOT arrive).
 */
export async function pingPong (client: TestClient): Promise<void> {
  const id = `probe-${++pingCounter}`
  client.send({ type: 'ping', id })
  await client.waitFor(`pong ${id}`, () => client.frames.some((f) => f.type === 'pong' && f.id === id))
}

/** Asserts-friendly summary: seqs of one team in arrival order. */
export function seqsOf (events: readonly TaskEvent[], teamId: string): number[] {
  return events.filter((e) => e.teamId === teamId).map((e) => e.seq)
}
