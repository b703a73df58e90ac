import WebSocket from 'ws'
import type { Socket } from 'node:net'

/** ws's frame builder: public at runtime (`WebSocket.Sender`), missing from @types/ws. */
const { Sender } = WebSocket as unknown as {
  Sender: { frame (data: Buffer, options: { fin: boolean, opcode: number, mask: boolean, readOnly: boolean, rsv1: boolean }): Buffer[] }
}

/**
 * One event as a complete WebSocket text frame, built once and written as the same bytes to
 * every socket of the team. Server frames are never masked, so one frame fits every client.
 */
export class SharedFrame {
  /** The event's JSON, for sockets that cannot take pre-framed bytes. */
  readonly payload: Buffer
  /** Header and payload in one buffer: one write per socket. */
  readonly bytes: Buffer

  constructor (payload: string) {
    this.payload = Buffer.from(payload)
    this.bytes = Buffer.concat(Sender.frame(this.payload, { fin: true, opcode: 1, mask: false, readOnly: true, rsv1: false }))
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
