import { randomUUID } from 'node:crypto'
import { InvalidCursorError, InvalidLimitError, InvalidTaskError, MutationIdConflictError, PreconditionFailedError, TaskNotFoundError } from './errors.js'
import { createdTaskFields, TASK_FIELDS, type TaskField, type TaskStatus } from '../protocol/constants.js'
import type { Task, TaskEvent, TaskInput, TaskPatch } from '../protocol/schemas.js'
import type { CommitListener, ListOptions, MutationContext, MutationResult } from './repository.js'
import type { LoggedEvent } from './types.js'
import { isWellFormed } from './well-formed.js'
import { transactionTimed } from './diagnostics.js'

// What both repositories (SQLite, PostgreSQL) do the same way, apart from their statements: the
// rows a mutation writes, the event it appends, its idempotency fingerprint, the list's cursors,
// and telling commit listeners. One place, so the two databases cannot drift apart in meaning.

const FIELDS: readonly TaskField[] = TASK_FIELDS

/**
 * A task's row, the same in both databases (lib/db/schema.ts and lib/db/pg-schema.ts fail the
 * build if theirs stops matching it). Spelled out rather than taken from a Drizzle table, so that
 * no public declaration names drizzle-orm's types (they do not compile with skipLibCheck off).
 */
export interface TaskRow {
  id: string
  teamId: string
  title: string
  description: string
  status: TaskStatus
  assignee: string | null
  dueDate: string | null
  version: number
  createdAt: number
  updatedAt: number
  updatedBy: string
}

/** True when A and B are the same type: `Assert<Same<A, B>>` fails to compile otherwise. */
export type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false
export type Assert<T extends true> = T

export type EventEnvelope = Pick<TaskEvent, 'teamId' | 'seq' | 'taskId' | 'actor' | 'at' | 'mutationId'>
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never
/** An event before the log gave it a seq. */
export type PartialEvent = DistributiveOmit<TaskEvent, keyof EventEnvelope>

/** What a mutation's change produced: the task after it, and its event (null: nothing changed). */
export interface Change { task: Task, event: PartialEvent | null }

/** The one place an event becomes its wire form; the same string is stored, published and sent. */
export function serializeEvent (event: TaskEvent): string {
  // Field order is part of what a reader sees first: type, team and seq lead.
  const { type, teamId, seq, taskId, actor, at, mutationId, ...rest } = event
  return JSON.stringify({ type, teamId, seq, taskId, actor, at, mutationId, ...rest })
}

export function toTask (row: TaskRow): Task {
  return {
    id: row.id,
    teamId: row.teamId,
    title: row.title,
    description: row.description,
    status: row.status,
    assignee: row.assignee,
    dueDate: row.dueDate,
    version: row.version,
    createdAt: new Date(row.createdAt).toISOString(),
    updatedAt: new Date(row.updatedAt).toISOString(),
    updatedBy: row.updatedBy
  }
}

/** The row a create inserts, and its change. */
export function createdRow (teamId: string, input: TaskInput, actor: string, now: number): { row: TaskRow, change: Change } {
  const row: TaskRow = { id: randomUUID(), teamId, ...createdTaskFields(input), version: 1, createdAt: now, updatedAt: now, updatedBy: actor }
  const task = toTask(row)
  return { row, change: { task, event: { type: 'task.created', task } } }
}

/**
 * Field-level last-write-wins against the row as it is now (read under the write lock): only
 * the fields of `patch` that differ are set. `set` is null when nothing changes.
 */
export function patchedRow (current: TaskRow, patch: TaskPatch, actor: string, now: number): { set: Partial<TaskRow> | null, change: Change } {
  const changes = FIELDS.filter((f) => patch[f] !== undefined && patch[f] !== current[f])
  if (changes.length === 0) return { set: null, change: { task: toTask(current), event: null } }
  const set: Partial<TaskRow> = { version: current.version + 1, updatedAt: now, updatedBy: actor }
  for (const field of changes) Object.assign(set, { [field]: patch[field] })
  const task = toTask({ ...current, ...set })
  return { set, change: { task, event: { type: 'task.updated', task, changes } } }
}

export function deletedChange (current: TaskRow): Change {
  return { task: toTask(current), event: { type: 'task.deleted', version: current.version } }
}

/** The task row a mutation works on, checked against its If-Match. */
export function checkCurrent (current: TaskRow | undefined, taskId: string, context: MutationContext): TaskRow {
  if (current === undefined) throw new TaskNotFoundError(taskId)
  const { ifMatch } = context
  if (ifMatch !== undefined && ifMatch !== '*' && !ifMatch.includes(current.version)) {
    throw new PreconditionFailedError(toTask(current))
  }
  return current
}

/** The full event, its stored and wire form, once the log gave it `seq`. */
export function completeEvent (teamId: string, seq: number, partial: PartialEvent, task: Task, context: MutationContext, now: number): { event: TaskEvent, logged: LoggedEvent } {
  const envelope: EventEnvelope = { teamId, seq, taskId: task.id, actor: context.actor, at: new Date(now).toISOString(), mutationId: context.mutationId ?? null }
  const event = { ...partial, ...envelope } as TaskEvent
  return { event, logged: { teamId, seq, payload: serializeEvent(event) } }
}

/** A mutation id seen before: its stored result, if the same request; refused if another one. */
export function replayOf (seen: { fingerprint: string, result: string }, fingerprint: string, mutationId: string): MutationResult {
  if (seen.fingerprint !== fingerprint) throw new MutationIdConflictError(mutationId)
  return { task: JSON.parse(seen.result) as Task, event: null, replayed: true }
}

/** What identifies a request for its mutation id ('' without one). */
export function fingerprintOf (context: MutationContext, request: unknown[]): string {
  return context.mutationId === undefined ? '' : canonicalJson(request)
}

/** A list request's limit and decoded cursor, checked. */
export function listBounds (options: ListOptions): { limit: number | undefined, after: { createdAt: number, id: string } | undefined } {
  const { limit, cursor } = options
  if (limit !== undefined && (!Number.isSafeInteger(limit) || limit < 1)) throw new InvalidLimitError(Number.MAX_SAFE_INTEGER)
  return { limit, after: cursor === undefined ? undefined : decodeCursor(cursor) }
}

/** A page from `limit + 1` rows read: the extra row only says that another page follows. */
export function pageOf (rows: TaskRow[], limit: number | undefined, seq: number): { tasks: Task[], seq: number, nextCursor: string | null } {
  const more = limit !== undefined && rows.length > limit
  if (more) rows.length = limit
  const last = rows.at(-1)
  return { tasks: rows.map(toTask), seq, nextCursor: more && last !== undefined ? encodeCursor(last.createdAt, last.id) : null }
}

/**
 * A page's end as an opaque token: base64url of `[createdAt, id]` of its last task. The keyset
 * (createdAt, id) never changes for a task, so a cursor stays meaningful whatever is inserted
 * or deleted between pages.
 */
function encodeCursor (createdAt: number, id: string): string {
  return Buffer.from(JSON.stringify([createdAt, id])).toString('base64url')
}

/** The key a cursor names; anything that `encodeCursor` could not have produced is refused. */
function decodeCursor (cursor: string): { createdAt: number, id: string } {
  if (typeof cursor !== 'string' || !/^[A-Za-z0-9_-]{1,200}$/.test(cursor)) throw new InvalidCursorError()
  let key: unknown
  try {
    key = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'))
  } catch {
    throw new InvalidCursorError()
  }
  if (!Array.isArray(key) || key.length !== 2) throw new InvalidCursorError()
  const [createdAt, id] = key as unknown[]
  if (!Number.isSafeInteger(createdAt) || (createdAt as number) < 0 || typeof id !== 'string' || id === '' || id.length > 64) {
    throw new InvalidCursorError()
  }
  // Only the canonical spelling: no padding tricks, no second way to say the same cursor.
  if (encodeCursor(createdAt as number, id) !== cursor) throw new InvalidCursorError()
  return { createdAt: createdAt as number, id }
}

/** JSON with object keys sorted, so the same request always has the same fingerprint. */
function canonicalJson (value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => v !== null && typeof v === 'object' && !Array.isArray(v)
    ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
    : v)
}

/**
 * Checks what a JSON schema cannot: that every string is well-formed UTF-16 (a lone surrogate
 * would be broadcast as sent but stored as replacement characters), and that a due date names
 * a real day. Here rather than in the routes, so an integrator's own routes are covered too.
 */
export function checkTaskValues (values: TaskPatch): void {
  for (const field of FIELDS) {
    const value = values[field]
    if (typeof value === 'string' && !isWellFormed(value)) {
      throw new InvalidTaskError(`${field} is not well-formed UTF-16 (it contains a lone surrogate)`)
    }
  }
  const { dueDate } = values
  if (typeof dueDate === 'string') {
    const parsed = new Date(`${dueDate}T00:00:00Z`)
    if (Number.isNaN(parsed.getTime()) || parsed.toISOString().slice(0, 10) !== dueDate) {
      throw new InvalidTaskError(`dueDate ${dueDate} is not a calendar date`)
    }
  }
}

/**
 * The commit listeners of one repository, and the transaction timing reported on
 * `atlas:db:transaction`: `committed` is called once a mutation's transaction committed.
 */
export class CommitNotifier {
  readonly #listeners = new Set<CommitListener>()
  constructor (readonly repository: object) {}

  add (listener: CommitListener): () => void {
    this.#listeners.add(listener)
    return () => { this.#listeners.delete(listener) }
  }

  /** When a transaction starts: the moment its duration is measured from (0 when nobody listens). */
  started (): number {
    return transactionTimed.hasSubscribers ? performance.now() : 0
  }

  committed (started: number, event: LoggedEvent | undefined): void {
    const arrivedAt = performance.now()
    if (started !== 0 && transactionTimed.hasSubscribers) transactionTimed.publish({ repository: this.repository, durationMs: arrivedAt - started })
    if (event === undefined) return
    event.arrivedAt = arrivedAt
    for (const listener of this.#listeners) listener(event)
  }
}
