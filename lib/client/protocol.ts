// The wire protocol as the client sees it. Types come from the server's modules (type-only
// imports, erased at compile time, so nothing of the server is loaded in a browser); the few
// runtime constants are repeated here for the same reason, and a test checks they agree.
import type { ResyncReason } from '../protocol.js'
import type { Task, TaskEvent } from '../types.js'

export type { ResyncReason, Task, TaskEvent }
export type { TaskCreatedEvent, TaskDeletedEvent, TaskField, TaskInput, TaskPatch, TaskStatus, TaskUpdatedEvent } from '../types.js'

/** Close codes the client reacts to (see docs/protocol.md). */
export const CloseCode = {
  NORMAL: 1000,
  /** The server is going away (restart, deploy): reconnect and resume. */
  GOING_AWAY: 1001,
  /** The client read too slowly and was cut off: reconnect and resume. */
  SLOW_CONSUMER: 4008,
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
