import { randomBytes } from 'node:crypto'
import { request, type IncomingHttpHeaders } from 'node:http'
import type { Socket } from 'node:net'
import WebSocket from 'ws'
import { TypeRegistry } from '@sinclair/typebox'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { serverFrameSchemas, type TaskEvent } from '../../protocol/schemas.js'

export interface ServerFrame { type: string, [key: string]: unknown }

// The task's `type: [..., 'null']` and `enum` members are Unsafe schemas (written for the
// serializer's sake); TypeBox's compiler checks them through the registry. Only the keywords
// the protocol uses are understood: anything else fails loudly rather than passing unchecked.
if (!TypeRegistry.Has('Unsafe')) {
  TypeRegistry.Set<{ type?: string | string[], enum?: unknown[] }>('Unsafe', (schema, value) => {
    const unknown = Object.keys(schema).filter((key) => !['type', 'enum', 'description'].includes(key))
    if (unknown.length > 0) throw new Error(`ws-client: cannot check an Unsafe schema with ${unknown.join(', ')}`)
    const types = schema.type === undefined ? undefined : [schema.type].flat()
    if (types !== undefined && !types.some((type) => type === 'null' ? value === null : type === 'integer' ? Number.isInteger(value) : typeof value === type)) return false
    return schema.enum === undefined || schema.enum.includes(value)
  })
}

const serverFrameCheckers = new Map(Object.entries(serverFrameSchemas).map(([type, schema]) => [type, TypeCompiler.Compile(schema)]))

/**
 * Parses a frame the server sent and checks it against its schema in protocol/schemas.ts:
 * throws when its type is unknown or it does not match, so a server frame that drifts from the
 * contract fails the test that saw it.
 */
export function checkedServerFrame (text: string): ServerFrame {
  const frame = JSON.parse(text) as ServerFrame
  const checker = typeof frame?.type === 'string' ? serverFrameCheckers.get(frame.type) : undefined
  if (checker === undefined) throw new Error(`the server sent a frame of no known type: ${text.slice(0, 300)}`)
  if (!checker.Check(frame)) {
    const first = checker.Errors(frame).First()
    throw new Error(`the server sent a ${frame.type} frame that does not match protocol/schemas.ts at ${first?.path || '/'} (${first?.message}): ${text.slice(0, 300)}`)
  }
  return frame
}

/** Fails the test process loudly: an exception thrown in a socket listener could be swallowed. */
export function protocolViolation (err: unknown): void {
  queueMicrotask(() => { throw err })
}

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
  /** The first frame that broke the contract: waits fail with it at once. */
  #violation: Error | undefined

  constructor (url: string, options: WebSocket.ClientOptions = {}) {
    this.socket = new WebSocket(url, options)
    this.socket.on('message', (data) => {
      let frame: ServerFrame
      try {
        frame = checkedServerFrame(data.toString())
      } catch (err) {
        this.#violation ??= err as Error
        protocolViolation(err)
        for (const check of this.#waiters) check()
        return
      }
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
    if (this.#violation !== undefined) throw this.#violation
    if (predicate()) return
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(check)
        reject(new Error(`timed out waiting for ${what}; got ${this.frames.length} frames, last: ${JSON.stringify(this.frames.at(-1))?.slice(0, 300)}`))
      }, timeoutMs)
      const check = (): void => {
        if (this.#violation !== undefined) {
          clearTimeout(timer)
          this.#waiters.delete(check)
          reject(this.#violation)
          return
        }
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

export type UpgradeOutcome =
  | { upgraded: true, socket: Socket }
  | { upgraded: false, status: number, headers: IncomingHttpHeaders, body: any }

/** Sends a WebSocket upgrade request by hand: the upgraded socket, or the refusal with its JSON body. */
export async function upgradeRequest (wsUrl: string, headers: Record<string, string> = {}): Promise<UpgradeOutcome> {
  const url = new URL(wsUrl)
  return await new Promise<UpgradeOutcome>((resolve, reject) => {
    const req = request({
      host: url.hostname,
      port: url.port,
      path: url.pathname + url.search,
      headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': randomBytes(16).toString('base64'), ...headers }
    })
    req.once('upgrade', (_res, socket) => { resolve({ upgraded: true, socket }) })
    req.once('response', (res) => {
      let text = ''
      res.setEncoding('utf8').on('data', (chunk: string) => { text += chunk }).once('end', () => {
        let body: unknown = text
        try { body = JSON.parse(text) } catch {}
        resolve({ upgraded: false, status: res.statusCode ?? 0, headers: res.headers, body })
      })
    })
    req.once('error', reject)
    req.end()
  })
}

/** Upgrades by hand and then never reads a byte: the kernel buffers fill, then the server's. */
export async function neverReadingClient (t: { teardown (fn: () => unknown): void }, wsUrl: string): Promise<Socket> {
  const outcome = await upgradeRequest(wsUrl)
  if (!outcome.upgraded) throw new Error(`upgrade refused: ${outcome.status}`)
  const { socket } = outcome
  socket.on('error', () => {})
  socket.pause()
  t.teardown(() => { socket.destroy() })
  return socket
}
