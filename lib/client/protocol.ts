// The wire protocol as the client sees it. Types come from the server's modules (type-only
// imports, erased at compile time, so nothing of the server is loaded in a browser). The close
// codes are defined here, where the browser can load them, and the server imports them from here.
import type { ResyncReason } from '../protocol.js'
import type { Task, TaskEvent } from '../types.js'

export type { ResyncReason, Task, TaskEvent }
export type { TaskCreatedEvent, TaskDeletedEvent, TaskField, TaskInput, TaskPatch, TaskStatus, TaskUpdatedEvent } from '../types.js'

/** WebSocket close codes of the protocol (docs/protocol.md, "Close codes"). */
export const CloseCode = {
  NORMAL: 1000,
  /** The server is shutting down or restarting: reconnect (elsewhere) and resume. */
  GOING_AWAY: 1001,
  /** The credentials the socket was opened with expired: reconnect with a fresh token. */
  CREDENTIALS_EXPIRED: 4001,
  /** Too many invalid frames. */
  POLICY_VIOLATION: 1008,
  /** A frame larger than the server's limit (sent by the ws library itself). */
  MESSAGE_TOO_BIG: 1009,
  /** The client did not read fast enough; its backlog passed the server's limit. Reconnect and resume. */
  SLOW_CONSUMER: 4008,
  /** The instance is at its connection limit (a race the upgrade's 429/503 did not catch): retry later. */
  TRY_AGAIN_LATER: 1013,
  /** Not sent by the server: the client closed a socket it found dead (no pong in time). */
  HEARTBEAT_TIMEOUT: 4000
} as const

export type ServerFrame =
  | { type: 'welcome', protocol: number, userId: string, teams: string[], heartbeatMs: number }
  | { type: 'subscribed', teamId: string, seq: number, replayed: number }
  | { type: 'unsubscribed', teamId: string }
  | { type: 'resync', teamId: string, seq: number, reason: ResyncReason }
  | { type: 'error', code: string, message: string }
  | { type: 'pong', id?: string | number }
  | TaskEvent

export type ClientFrame =
  | { type: 'subscribe', teams: string[], since?: Record<string, number> }
  | { type: 'unsubscribe', teams: string[] }
  | { type: 'ping', id?: string | number }

/** Parses a server frame; anything that is not a JSON object with a string `type` is undefined. */
export function parseServerFrame (data: unknown): ServerFrame | undefined {
  if (typeof data !== 'string') return undefined
  try {
    const value: unknown = JSON.parse(data)
    if (typeof value === 'object' && value !== null && typeof (value as { type?: unknown }).type === 'string') return value as ServerFrame
  } catch {}
  return undefined
}

export function isTaskEvent (frame: ServerFrame): frame is TaskEvent {
  return frame.type === 'task.created' || frame.type === 'task.updated' || frame.type === 'task.deleted'
}
