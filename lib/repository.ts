import { randomUUID } from 'node:crypto'
import type { Database, Statement } from 'better-sqlite3'
import { and, asc, eq, lt, lte, sql } from 'drizzle-orm'
import type { AtlasDatabase } from './db/open.js'
import type { DrizzleDatabase } from './db/drizzle.js'
import { events, mutations, revocations, tasks, teamSequences, type TaskRow } from './db/schema.js'
import { InvalidCursorError, InvalidLimitError, InvalidTaskError, MutationIdConflictError, PreconditionFailedError, TaskNotFoundError } from './errors.js'
import { createdTaskFields, TASK_FIELDS, type TaskField } from '../protocol/constants.js'
import type { Task, TaskEvent, TaskInput, TaskPatch } from '../protocol/schemas.js'
import type { LoggedEvent } from './types.js'
import { isWellFormed } from './well-formed.js'
import { transactionTimed } from './diagnostics.js'

/** Who makes a mutation and under which conditions. */
export interface MutationContext {
  /** User id of the principal making the change; it goes into the event and `updatedBy`. */
  actor: string
  /** Versions the client believes current (If-Match); `'*'` or absent means any. */
  ifMatch?: readonly number[] | '*'
  /** Client-chosen id of this mutation: a retry with the same id is applied once. */
  mutationId?: string
}

export interface MutationResult {
  /** The task after the change; for a delete, the task as it was. */
  task: Task
  /** The event the mutation appended, or null when nothing changed (or this is a replayed retry). */
  event: TaskEvent | null
  /** True when this is the stored result of an earlier request with the same mutation id. */
  replayed: boolean
}

/**
 * What the event log keeps. Here, 0 or absent means no limit; the defaults a deployment runs
 * with are the retention's (lib/retention.ts), which always passes every limit.
 */
export interface RetentionPolicy {
  /** Keep at most this many events per team. */
  maxEventsPerTeam?: number
  /** Drop events older than this many ms. */
  maxEventAgeMs?: number
  /** Forget mutation ids older than this many ms; revocations too (every instance applied them long before). */
  mutationIdTtlMs?: number
}

/** A revocation the host made: a user entirely (`teamId` null), or the user's membership of one team. */
export interface Revocation {
  /** Increasing: an instance applies the revocations after the last id it applied. */
  id: number
  userId: string
  teamId: string | null
}

export type CommitListener = (event: LoggedEvent) => void

export interface ListOptions {
  /** At most this many tasks (a positive integer; absent: all of them). */
  limit?: number
  /** The `nextCursor` of the previous page; absent: from the first task. */
  cursor?: string
}

export interface TaskPage {
  tasks: Task[]
  /** The team's event seq this page is current as of (0 before the first event). */
  seq: number
  /** Pass as `cursor` for the next page; null when this page is the last. */
  nextCursor: string | null
}

const FIELDS: readonly TaskField[] = TASK_FIELDS

export interface TaskRepositoryOptions {
  /** Clock, injectable for tests. */
  now?: () => number
}

/**
 * The tasks of every team, and each team's event log. Every mutation changes the task row and
 * appends its event in one SQLite transaction, so there is never an event without a committed
 * change nor a change without an event. Listeners registered with `onCommit` hear about each
 * event after its transaction committed.
 */
export class TaskRepository {
  readonly #db: DrizzleDatabase
  readonly #now: () => number
  readonly #listeners = new Set<CommitListener>()

  /**
   * The hot path's statements, prepared once on the raw better-sqlite3 connection with
   * positional parameters: drizzle's prepared queries still map every parameter and result row
   * on each call, which showed up in the profile at seed load.
   */
  readonly #q: {
    insertTask: Statement<unknown[]>
    nextSeq: Statement<[string], number>
    insertEvent: Statement<unknown[]>
    eventsAfter: Statement<[string, number, number], LoggedEvent>
    history: Statement<[string], { seq: number, prunedThrough: number }>
    unpublishedCount: Statement<[], number>
    begin: Statement<[]>
    rollback: Statement<[]>
    markPublished: Statement<[string, number]>
  }

  /** Runs a callback in one IMMEDIATE transaction (better-sqlite3's own, built once, synchronous). */
  readonly #immediate: <T>(fn: () => T) => T

  constructor (db: AtlasDatabase, options: TaskRepositoryOptions = {}) {
    // The opaque public type is the Drizzle database openDatabase made; drizzle() hands back
    // its connection as $client (absent from drizzle's type).
    this.#db = db as unknown as DrizzleDatabase
    const sqlite = (db as unknown as { $client: Database }).$client
    this.#q = {
      insertTask: sqlite.prepare(`insert into "tasks" ("id", "team_id", "title", "description", "status", "assignee", "due_date", "version", "created_at", "updated_at", "updated_by")
        values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
      nextSeq: sqlite.prepare<[string], number>(`insert into "team_sequences" ("team_id", "seq") values (?, 1)
        on conflict ("team_id") do update set "seq" = "team_sequences"."seq" + 1 returning "seq"`).pluck(),
      insertEvent: sqlite.prepare('insert into "events" ("team_id", "seq", "type", "task_id", "payload", "created_at") values (?, ?, ?, ?, ?, ?)'),
      eventsAfter: sqlite.prepare<[string, number, number], LoggedEvent>(`select "team_id" as "teamId", "seq", "payload" from "events"
        where "team_id" = ? and "seq" > ? order by "seq" asc limit ?`),
      history: sqlite.prepare<[string], { seq: number, prunedThrough: number }>('select "seq", "pruned_through" as "prunedThrough" from "team_sequences" where "team_id" = ?'),
      unpublishedCount: sqlite.prepare<[], number>('select count(*) from "events" where "published" = 0').pluck(),
      begin: sqlite.prepare('begin immediate'),
      rollback: sqlite.prepare('rollback'),
      markPublished: sqlite.prepare<[string, number]>('update "events" set "published" = 1 where "team_id" = ? and "seq" = ?')
    }
    const immediate = sqlite.transaction((fn: () => unknown) => fn()).immediate
    this.#immediate = immediate as <T>(fn: () => T) => T
    this.#now = options.now ?? Date.now
  }

  /** Calls `listener` with every event this repository commits. Returns an unsubscribe function. */
  onCommit (listener: CommitListener): () => void {
    this.#listeners.add(listener)
    return () => { this.#listeners.delete(listener) }
  }

  /**
   * A team's tasks, oldest first (by createdAt, then id), and the event seq they are current as
   * of, read in one snapshot. With `limit`, one page of them: `nextCursor` (null on the last
   * page) passed back as `cursor` gives the tasks after this page's last one. Without `limit`,
   * all of them.
   */
  list (teamId: string, options: ListOptions = {}): TaskPage {
    const { limit, cursor } = options
    if (limit !== undefined && (!Number.isSafeInteger(limit) || limit < 1)) throw new InvalidLimitError(Number.MAX_SAFE_INTEGER)
    const after = cursor === undefined ? undefined : decodeCursor(cursor)
    return this.#db.transaction((tx) => {
      const query = tx.select().from(tasks)
        .where(after === undefined
          ? eq(tasks.teamId, teamId)
          : and(eq(tasks.teamId, teamId), sql`(${tasks.createdAt}, ${tasks.id}) > (${after.createdAt}, ${after.id})`))
        .orderBy(asc(tasks.createdAt), asc(tasks.id))
      // One row more than the page tells whether another page follows.
      const rows = limit === undefined ? query.all() : query.limit(limit + 1).all()
      const head = tx.select({ seq: teamSequences.seq }).from(teamSequences).where(eq(teamSequences.teamId, teamId)).get()
      const more = limit !== undefined && rows.length > limit
      if (more) rows.length = limit
      const last = rows.at(-1)
      return { tasks: rows.map(toTask), seq: head?.seq ?? 0, nextCursor: more && last !== undefined ? encodeCursor(last.createdAt, last.id) : null }
    }, { behavior: 'deferred' })
  }

  get (teamId: string, taskId: string): Task | undefined {
    const row = this.#db.select().from(tasks).where(and(eq(tasks.teamId, teamId), eq(tasks.id, taskId))).get()
    return row === undefined ? undefined : toTask(row)
  }

  create (teamId: string, input: TaskInput, context: MutationContext): MutationResult {
    checkTaskValues(input)
    return this.#mutate(teamId, context, ['create', input], (tx, now) => {
      const row: TaskRow = {
        id: randomUUID(),
        teamId,
        ...createdTaskFields(input),
        version: 1,
        createdAt: now,
        updatedAt: now,
        updatedBy: context.actor
      }
      this.#q.insertTask.run(row.id, row.teamId, row.title, row.description, row.status, row.assignee, row.dueDate, row.version, row.createdAt, row.updatedAt, row.updatedBy)
      const task = toTask(row)
      return { task, event: { type: 'task.created', task } }
    })
  }

  /** Field-level last-write-wins: only the fields in `patch` are written. */
  update (teamId: string, taskId: string, patch: TaskPatch, context: MutationContext): MutationResult {
    checkTaskValues(patch)
    return this.#mutate(teamId, context, ['update', taskId, patch], (tx, now) => {
      const current = this.#currentFor(tx, teamId, taskId, context)
      const changes = FIELDS.filter((f) => patch[f] !== undefined && patch[f] !== current[f])
      if (changes.length === 0) return { task: toTask(current), event: null }
      const set: Partial<TaskRow> = { version: current.version + 1, updatedAt: now, updatedBy: context.actor }
      for (const field of changes) Object.assign(set, { [field]: patch[field] })
      tx.update(tasks).set(set).where(eq(tasks.id, taskId)).run()
      const task = toTask({ ...current, ...set })
      return { task, event: { type: 'task.updated', task, changes } }
    })
  }

  delete (teamId: string, taskId: string, context: MutationContext): MutationResult {
    return this.#mutate(teamId, context, ['delete', taskId], (tx) => {
      const current = this.#currentFor(tx, teamId, taskId, context)
      tx.delete(tasks).where(eq(tasks.id, taskId)).run()
      const task = toTask(current)
      return { task, event: { type: 'task.deleted', version: current.version } }
    })
  }

  /** The last seq handed out for a team (0 before its first event). */
  headSeq (teamId: string): number {
    return this.#q.history.get(teamId)?.seq ?? 0
  }

  /**
   * Where a team's retained history stands: events after `prunedThrough` up to `head` are in the
   * log. A client that last saw seq s can resume iff prunedThrough <= s <= head.
   */
  history (teamId: string): { head: number, prunedThrough: number } {
    const row = this.#q.history.get(teamId)
    return { head: row?.seq ?? 0, prunedThrough: row?.prunedThrough ?? 0 }
  }

  /** Events of a team with seq > `afterSeq`, in order, at most `limit`. */
  eventsAfter (teamId: string, afterSeq: number, limit: number): LoggedEvent[] {
    return this.#q.eventsAfter.all(teamId, afterSeq, limit)
  }

  /** Events that no broker has accepted yet, committed before `before` (ms), in seq order per team. */
  unpublished (before: number, limit: number): LoggedEvent[] {
    return this.#db.select({ teamId: events.teamId, seq: events.seq, payload: events.payload })
      .from(events)
      .where(and(eq(events.published, 0), lt(events.createdAt, before)))
      .orderBy(asc(events.teamId), asc(events.seq))
      .limit(limit)
      .all()
  }

  markPublished (published: ReadonlyArray<{ teamId: string, seq: number }>): void {
    if (published.length === 0) return
    this.#immediate(() => {
      for (const { teamId, seq } of published) this.#q.markPublished.run(teamId, seq)
    })
  }

  /**
   * Drops events outside the retention policy and forgets old mutation ids. Unpublished events
   * are kept (they are still the outbox), and so is everything after them, so the retained
   * history of a team always stays one unbroken run of seqs.
   */
  prune (policy: RetentionPolicy): { events: number, mutationIds: number } {
    const now = this.#now()
    const { maxEventsPerTeam = 0, maxEventAgeMs = 0, mutationIdTtlMs = 0 } = policy
    return this.#db.transaction((tx) => {
      let removed = 0
      for (const team of tx.select().from(teamSequences).all()) {
        let cutoff = team.prunedThrough
        if (maxEventsPerTeam > 0) cutoff = Math.max(cutoff, team.seq - maxEventsPerTeam)
        if (maxEventAgeMs > 0) {
          const old = tx.select({ seq: sql<number | null>`max(${events.seq})` }).from(events)
            .where(and(eq(events.teamId, team.teamId), lt(events.createdAt, now - maxEventAgeMs))).get()
          cutoff = Math.max(cutoff, old?.seq ?? 0)
        }
        const firstUnpublished = tx.select({ seq: sql<number | null>`min(${events.seq})` }).from(events)
          .where(and(eq(events.teamId, team.teamId), eq(events.published, 0))).get()?.seq
        if (firstUnpublished != null) cutoff = Math.min(cutoff, firstUnpublished - 1)
        if (cutoff <= team.prunedThrough) continue
        removed += tx.delete(events).where(and(eq(events.teamId, team.teamId), lte(events.seq, cutoff))).run().changes
        tx.update(teamSequences).set({ prunedThrough: cutoff }).where(eq(teamSequences.teamId, team.teamId)).run()
      }
      const forgotten = mutationIdTtlMs > 0 ? tx.delete(mutations).where(lt(mutations.createdAt, now - mutationIdTtlMs)).run().changes : 0
      if (mutationIdTtlMs > 0) tx.delete(revocations).where(lt(revocations.createdAt, now - mutationIdTtlMs)).run()
      return { events: removed, mutationIds: forgotten }
    }, { behavior: 'immediate' })
  }

  /** Records a revocation; every instance applies it to its open sockets (see `revocationsAfter`). */
  revoke (userId: string, teamId: string | null): Revocation {
    const row = this.#db.insert(revocations).values({ userId, teamId, createdAt: this.#now() })
      .returning({ id: revocations.id, userId: revocations.userId, teamId: revocations.teamId }).get()
    return row
  }

  /** Revocations recorded after `afterId`, oldest first, at most `limit`. */
  revocationsAfter (afterId: number, limit: number): Revocation[] {
    return this.#db.select({ id: revocations.id, userId: revocations.userId, teamId: revocations.teamId })
      .from(revocations).where(sql`${revocations.id} > ${afterId}`).orderBy(asc(revocations.id)).limit(limit).all()
  }

  /** Events no broker has taken yet (the outbox's backlog; the partial index answers it). */
  unpublishedCount (): number {
    return this.#q.unpublishedCount.get() as number
  }

  /**
   * Whether a write could start now: takes the write lock and gives it back at once (waiting at
   * most the busy timeout for another process's transaction). False on a read-only or closed
   * database, or one whose lock is held past the timeout.
   */
  writable (): boolean {
    try {
      this.#q.begin.run()
      this.#q.rollback.run()
      return true
    } catch {
      return false
    }
  }

  /** The id of the last revocation recorded (0: none): an instance starting applies only later ones. */
  lastRevocationId (): number {
    return this.#db.select({ id: sql<number | null>`max(${revocations.id})` }).from(revocations).get()?.id ?? 0
  }

  #currentFor (tx: Transaction, teamId: string, taskId: string, context: MutationContext): TaskRow {
    const current = tx.select().from(tasks).where(and(eq(tasks.teamId, teamId), eq(tasks.id, taskId))).get()
    if (current === undefined) throw new TaskNotFoundError(taskId)
    const { ifMatch } = context
    if (ifMatch !== undefined && ifMatch !== '*' && !ifMatch.includes(current.version)) {
      throw new PreconditionFailedError(toTask(current))
    }
    return current
  }

  /**
   * Runs one mutation in one IMMEDIATE transaction (taking the write lock up front, so two
   * processes never deadlock upgrading a read lock): idempotency check, the change, the team's
   * next seq, the event, the idempotency record. The callback must stay synchronous: an async
   * one would run its writes outside the transaction.
   */
  #mutate (
    teamId: string,
    context: MutationContext,
    request: unknown[],
    change: (tx: Transaction, now: number) => { task: Task, event: DistributiveOmit<TaskEvent, keyof EventEnvelope> | null }
  ): MutationResult {
    const { mutationId } = context
    const fingerprint = mutationId === undefined ? '' : canonicalJson(request)
    let committed: LoggedEvent | undefined
    const tx = this.#db
    const timed = transactionTimed.hasSubscribers
    const started = timed ? performance.now() : 0
    const result = this.#immediate((): MutationResult => {
      if (mutationId !== undefined) {
        const seen = tx.select().from(mutations)
          .where(and(eq(mutations.teamId, teamId), eq(mutations.actor, context.actor), eq(mutations.mutationId, mutationId))).get()
        if (seen !== undefined) {
          if (seen.fingerprint !== fingerprint) throw new MutationIdConflictError(mutationId)
          return { task: JSON.parse(seen.result) as Task, event: null, replayed: true }
        }
      }
      const now = this.#now()
      const { task, event: partial } = change(tx, now)
      let event: TaskEvent | null = null
      if (partial !== null) {
        const seq = this.#q.nextSeq.get(teamId) as number
        const envelope: EventEnvelope = { teamId, seq, taskId: task.id, actor: context.actor, at: new Date(now).toISOString(), mutationId: mutationId ?? null }
        event = { ...partial, ...envelope } as TaskEvent
        const payload = serializeEvent(event)
        this.#q.insertEvent.run(teamId, seq, event.type, task.id, payload, now)
        committed = { teamId, seq, payload }
      }
      if (mutationId !== undefined) {
        tx.insert(mutations).values({ teamId, actor: context.actor, mutationId, fingerprint, result: JSON.stringify(task), createdAt: now }).run()
      }
      return { task, event, replayed: false }
    })
    const arrivedAt = performance.now()
    if (timed) transactionTimed.publish({ repository: this, durationMs: arrivedAt - started })
    if (committed !== undefined) {
      committed.arrivedAt = arrivedAt
      for (const listener of this.#listeners) listener(committed)
    }
    return result
  }
}

/**
 * What a mutation's change runs its statements on: the database itself, inside the IMMEDIATE
 * transaction `#mutate` holds open on the same (synchronous) connection.
 */
type Transaction = DrizzleDatabase
type EventEnvelope = Pick<TaskEvent, 'teamId' | 'seq' | 'taskId' | 'actor' | 'at' | 'mutationId'>
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never

/** The one place an event becomes its wire form; the same string is stored, published and sent. */
export function serializeEvent (event: TaskEvent): string {
  // Field order is part of what a reader sees first: type, team and seq lead.
  const { type, teamId, seq, taskId, actor, at, mutationId, ...rest } = event
  return JSON.stringify({ type, teamId, seq, taskId, actor, at, mutationId, ...rest })
}

function toTask (row: TaskRow): Task {
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
function checkTaskValues (values: TaskPatch): void {
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
