import * as wsModule from 'ws'
import type WebSocket from 'ws'
import type { Socket } from 'node:net'

/** ws's frame builder (a named export of its ESM entry; @types/ws does not declare it). */
interface FrameBuilder {
  frame (data: Buffer, options: { fin: boolean, opcode: number, mask: boolean, readOnly: boolean, rsv1: boolean }): Buffer[]
}
const Sender = frameBuilder()

function frameBuilder (): FrameBuilder {
  const { Sender } = wsModule as unknown as { Sender?: FrameBuilder }
  if (typeof Sender?.frame !== 'function') throw new Error('atlas-realtime: the installed ws does not export Sender.frame (ws 8 does)')
  return Sender
}

/** A final, unmasked, uncompressed text frame: what a server sends (RFC 6455 5.1, 5.2). */
const SERVER_TEXT_FRAME = { fin: true, opcode: 0x1, mask: false, readOnly: true, rsv1: false } as const

/**
 * One event as a complete WebSocket text frame, built once and written as the same bytes to
 * every socket of the team. Server frames are never masked, so one frame fits every client.
 */
export class SharedFrame {
  /** The event's JSON, for sockets that cannot take pre-framed bytes (a view into `bytes`). */
  readonly payload: Buffer
  /** Header and payload in one buffer: one write per socket. */
  readonly bytes: Buffer

  constructor (payload: string) {
    // ws frames it (header, then the payload as is); joined once here, so that each socket
    // gets one write instead of ws's two.
    const data = Buffer.from(payload)
    const bytes = Buffer.concat(Sender.frame(data, SERVER_TEXT_FRAME))
    this.bytes = bytes
    this.payload = bytes.subarray(bytes.length - data.length)
  }
}

/**
 * The parts of ws's internals the fast path relies on (ws 8; package.json pins the minor
 * version, and test/shared-frame.test.ts fails if any of them moves). Null until the socket is
 * set, which a server-side socket always is.
 */
export interface WsInternals {
  _socket: Socket | null
  /** `_state` 0 is ws's DEFAULT: no compression or Blob read in progress. */
  _sender: { _queue: unknown[], _state: number } | null
  _extensions: Record<string, unknown>
}

const TEXT = { binary: false } as const

/**
 * Writes `frame` to `socket`. The pre-framed bytes go straight to the TCP socket when ws has
 * nothing of its own queued and no extension (permessage-deflate) rewrites frames; otherwise
 * ws frames the payload itself, so frame order on the wire is always ws's own order.
 */
export function writeSharedFrame (socket: WebSocket, frame: SharedFrame): void {
  const ws = socket as unknown as WsInternals
  const sender = ws._sender
  const raw = ws._socket
  if (raw != null && sender != null && sender._state === 0 && sender._queue.length === 0 && !('permessage-deflate' in ws._extensions)) {
    raw.write(frame.bytes)
  } else {
    socket.send(frame.payload, TEXT)
  }
}

/**
 * Whether the socket's own write buffer is full (Node's highWaterMark): more written now would
 * only pile up in this process's memory. 'drain' follows once the kernel took it.
 */
export function backlogged (socket: WebSocket): boolean {
  return (socket as unknown as WsInternals)._socket?.writableNeedDrain === true
}

/**
 * Resolves true on the socket's next 'drain', false when it closes first or `timeoutMs` passes.
 */
export async function whenDrained (socket: WebSocket, timeoutMs: number): Promise<boolean> {
  const raw = (socket as unknown as WsInternals)._socket
  if (raw == null || raw.destroyed) return false
  return await new Promise<boolean>((resolve) => {
    const done = (drained: boolean): void => {
      clearTimeout(timer)
      raw.off('drain', onDrain)
      raw.off('close', onClose)
      resolve(drained)
    }
    const onDrain = (): void => { done(true) }
    const onClose = (): void => { done(false) }
    const timer = setTimeout(() => { done(false) }, timeoutMs)
    raw.once('drain', onDrain)
    raw.once('close', onClose)
  })
}

/** Runs `fn` with the socket's TCP stream corked, so every frame it writes leaves in one write. */
export function corked (socket: WebSocket, fn: () => void): void {
  const raw = (socket as unknown as WsInternals)._socket
  raw?.cork()
  try { fn() } finally { raw?.uncork() }
}
