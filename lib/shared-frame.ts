import type WebSocket from 'ws'
import type { Socket } from 'node:net'

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
    // One allocation, the JSON encoded straight into it behind an unmasked FIN text-frame
    // header (RFC 6455 5.2), instead of encoding, framing and concatenating.
    const length = Buffer.byteLength(payload)
    const header = length < 126 ? 2 : length < 65536 ? 4 : 10
    const bytes = Buffer.allocUnsafe(header + length)
    bytes[0] = 0x81
    if (header === 2) {
      bytes[1] = length
    } else if (header === 4) {
      bytes[1] = 126
      bytes.writeUInt16BE(length, 2)
    } else {
      bytes[1] = 127
      bytes.writeUInt32BE(Math.floor(length / 2 ** 32), 2)
      bytes.writeUInt32BE(length >>> 0, 6)
    }
    bytes.write(payload, header, length, 'utf8')
    this.bytes = bytes
    this.payload = bytes.subarray(header)
  }
}

/** The parts of ws's internals the fast path relies on (ws 8). */
interface WsInternals {
  _socket?: Socket
  _sender?: { _queue: unknown[], _state: number }
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
  if (raw !== undefined && sender !== undefined && sender._state === 0 && sender._queue.length === 0 && !('permessage-deflate' in ws._extensions)) {
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
  if (raw === undefined || raw.destroyed) return false
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
