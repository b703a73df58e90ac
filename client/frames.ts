// Reading the server's frames. The types are the wire contract's (protocol/schemas.ts), imported
// as types only: the browser loads nothing of TypeBox.
import type { ServerFrame, TaskEvent } from '../protocol/schemas.js'

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
