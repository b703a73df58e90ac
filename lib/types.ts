import type { TaskStatus } from './db/schema.js'

export type { TaskStatus }

/** A task as the API and the events show it. Times are ISO 8601 strings. */
export interface Task {
  id: string
  teamId: string
  title: string
  description: string
  status: TaskStatus
  assignee: string | null
  dueDate: string | null
  version: number
  createdAt: string
  updatedAt: string
  updatedBy: string
}

export type TaskField = 'title' | 'description' | 'status' | 'assignee' | 'dueDate'

export interface TaskInput {
  title: string
  description?: string
  status?: TaskStatus
  assignee?: string | null
  dueDate?: string | null
}

export type TaskPatch = Partial<TaskInput>

interface EventBase {
  teamId: string
  seq: number
  taskId: string
  actor: string
  at: string
  mutationId: string | null
}

export interface TaskCreatedEvent extends EventBase {
  type: 'task.created'
  task: Task
}

export interface TaskUpdatedEvent extends EventBase {
  type: 'task.updated'
  task: Task
  changes: TaskField[]
}

export interface TaskDeletedEvent extends EventBase {
  type: 'task.deleted'
  version: number
}

export type TaskEvent = TaskCreatedEvent | TaskUpdatedEvent | TaskDeletedEvent
export type TaskEventType = TaskEvent['type']

/** Who is asking: returned by the integrator's `authenticate`. */
export interface Principal {
  userId: string
  teams: readonly string[]
  /**
   * When the credentials stop being valid (epoch ms). A socket outliving it is closed with
   * 4001 at the next heartbeat round, so the client reconnects with fresh credentials.
   */
  expiresAt?: number
}

/** An event as it leaves the log: its position and its wire bytes, serialised once. */
export interface LoggedEvent {
  teamId: string
  seq: number
  payload: string
}
