import type { Database, Statement } from 'better-sqlite3'
import { and, asc, eq, lt, lte, sql } from 'drizzle-orm'
import type { AtlasDatabase } from './db/open.js'
import type { DrizzleDatabase } from './db/drizzle.js'
import { events, mutations, revocations, tasks, teamSequences, type TaskRow } from './db/schema.js'
import type { Task, TaskInput, TaskPatch } from '../protocol/schemas.js'
import type { CommitListener, ListOptions, MutationContext, MutationResult, Revocation, RetentionPolicy, TaskPage, TaskRepository, TaskRepositoryOptions, TeamHistory } from './repository.js'
import type { LoggedEvent } from './types.js'
import {
  checkCurrent, checkTaskValues, CommitNotifier, completeEvent, createdRow, deletedChange, fingerprintOf, listBounds, pageOf,
  patchedRow, replayOf, toTask, type Change
} from './task-records.js'

/**
 * The repository on one SQLite file (better-sqlite3): several processes of one host may share
 * it. Every mutation runs in one IMMEDIATE transaction, which takes the write lock up front, so
 * seqs are handed out and committed in order and two processes never deadlock upgrading a read
 * lock. The driver is synchronous: each method has done its work when it returns its (settled)
 * promise.
 */
export class SqliteTaskRepository implements TaskRepository {
  readonly dialect = 'sqlite'
  readonly #db: DrizzleDatabase
  readonly #now: () => number
  readonly #commits: CommitNotifier

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
    this.#commits = new CommitNotifier(this)
  }

  onCommit (listener: CommitListener): () => void {
    return this.#commits.add(listener)
  }

  async list (teamId: string, options: ListOptions = {}): Promise<TaskPage> {
    const { limit, after } = listBounds(options)
    return this.#db.transaction((tx) => {
      const query = tx.select().from(tasks)
        .where(after === undefined
          ? eq(tasks.teamId, teamId)
          : and(eq(tasks.teamId, teamId), sql`(${tasks.createdAt}, ${tasks.id}) > (${after.createdAt}, ${after.id})`))
        .orderBy(asc(tasks.createdAt), asc(tasks.id))
      // One row more than the page tells whether another page follows.
      const rows = limit === undefined ? query.all() : query.limit(limit + 1).all()
      const head = tx.select({ seq: teamSequences.seq }).from(teamSequences).where(eq(teamSequences.teamId, teamId)).get()
      return pageOf(rows, limit, head?.seq ?? 0)
    }, { behavior: 'deferred' })
  }

  async get (teamId: string, taskId: string): Promise<Task | undefined> {
    const row = this.#db.select().from(tasks).where(and(eq(tasks.teamId, teamId), eq(tasks.id, taskId))).get()
    return row === undefined ? undefined : toTask(row)
  }

  async create (teamId: string, input: TaskInput, context: MutationContext): Promise<MutationResult> {
    checkTaskValues(input)
    return this.#mutate(teamId, context, ['create', input], (now) => {
      const { row, change } = createdRow(teamId, input, context.actor, now)
      this.#q.insertTask.run(row.id, row.teamId, row.title, row.description, row.status, row.assignee, row.dueDate, row.version, row.createdAt, row.updatedAt, row.updatedBy)
      return change
    })
  }

  async update (teamId: string, taskId: string, patch: TaskPatch, context: MutationContext): Promise<MutationResult> {
    checkTaskValues(patch)
    return this.#mutate(teamId, context, ['update', taskId, patch], (now) => {
      const { set, change } = patchedRow(this.#current(teamId, taskId, context), patch, context.actor, now)
      if (set !== null) this.#db.update(tasks).set(set).where(eq(tasks.id, taskId)).run()
      return change
    })
  }

  async delete (teamId: string, taskId: string, context: MutationContext): Promise<MutationResult> {
    return this.#mutate(teamId, context, ['delete', taskId], () => {
      const current = this.#current(teamId, taskId, context)
      this.#db.delete(tasks).where(eq(tasks.id, taskId)).run()
      return deletedChange(current)
    })
  }

  async headSeq (teamId: string): Promise<number> {
    return this.#q.history.get(teamId)?.seq ?? 0
  }

  async history (teamId: string): Promise<TeamHistory> {
    const row = this.#q.history.get(teamId)
    return { head: row?.seq ?? 0, prunedThrough: row?.prunedThrough ?? 0 }
  }

  async eventsAfter (teamId: string, afterSeq: number, limit: number): Promise<LoggedEvent[]> {
    return this.#q.eventsAfter.all(teamId, afterSeq, limit)
  }

  async unpublished (before: number, limit: number): Promise<LoggedEvent[]> {
    return this.#db.select({ teamId: events.teamId, seq: events.seq, payload: events.payload })
      .from(events)
      .where(and(eq(events.published, 0), lt(events.createdAt, before)))
      .orderBy(asc(events.teamId), asc(events.seq))
      .limit(limit)
      .all()
  }

  async markPublished (published: ReadonlyArray<{ teamId: string, seq: number }>): Promise<void> {
    if (published.length === 0) return
    this.#immediate(() => {
      for (const { teamId, seq } of published) this.#q.markPublished.run(teamId, seq)
    })
  }

  async prune (policy: RetentionPolicy): Promise<{ events: number, mutationIds: number }> {
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

  async revoke (userId: string, teamId: string | null): Promise<Revocation> {
    // One writer at a time: ids are handed out in commit order, as revocationsAfter needs.
    return this.#db.insert(revocations).values({ userId, teamId, createdAt: this.#now() })
      .returning({ id: revocations.id, userId: revocations.userId, teamId: revocations.teamId }).get()
  }

  async revocationsAfter (afterId: number, limit: number): Promise<Revocation[]> {
    return this.#db.select({ id: revocations.id, userId: revocations.userId, teamId: revocations.teamId })
      .from(revocations).where(sql`${revocations.id} > ${afterId}`).orderBy(asc(revocations.id)).limit(limit).all()
  }

  async unpublishedCount (): Promise<number> {
    // The partial index on unpublished events answers it.
    return this.#q.unpublishedCount.get() as number
  }

  /** Takes the write lock and gives it back at once (waiting at most the busy timeout). */
  async writable (): Promise<boolean> {
    try {
      this.#q.begin.run()
      this.#q.rollback.run()
      return true
    } catch {
      return false
    }
  }

  async lastRevocationId (): Promise<number> {
    return this.#db.select({ id: sql<number | null>`max(${revocations.id})` }).from(revocations).get()?.id ?? 0
  }

  /** The task row a mutation works on (inside its transaction), checked against its If-Match. */
  #current (teamId: string, taskId: string, context: MutationContext): TaskRow {
    return checkCurrent(this.#db.select().from(tasks).where(and(eq(tasks.teamId, teamId), eq(tasks.id, taskId))).get(), taskId, context)
  }

  /**
   * Runs one mutation in one IMMEDIATE transaction: idempotency check, the change, the team's
   * next seq, the event, the idempotency record. The change must stay synchronous: an async one
   * would run its writes outside the transaction.
   */
  #mutate (teamId: string, context: MutationContext, request: unknown[], change: (now: number) => Change): MutationResult {
    const { mutationId } = context
    const fingerprint = fingerprintOf(context, request)
    let committed: LoggedEvent | undefined
    const started = this.#commits.started()
    const result = this.#immediate((): MutationResult => {
      if (mutationId !== undefined) {
        const seen = this.#db.select().from(mutations)
          .where(and(eq(mutations.teamId, teamId), eq(mutations.actor, context.actor), eq(mutations.mutationId, mutationId))).get()
        if (seen !== undefined) return replayOf(seen, fingerprint, mutationId)
      }
      const now = this.#now()
      const { task, event: partial } = change(now)
      let event = null
      if (partial !== null) {
        const seq = this.#q.nextSeq.get(teamId) as number
        const completed = completeEvent(teamId, seq, partial, task, context, now)
        event = completed.event
        committed = completed.logged
        this.#q.insertEvent.run(teamId, seq, event.type, task.id, committed.payload, now)
      }
      if (mutationId !== undefined) {
        this.#db.insert(mutations).values({ teamId, actor: context.actor, mutationId, fingerprint, result: JSON.stringify(task), createdAt: now }).run()
      }
      return { task, event, replayed: false }
    })
    this.#commits.committed(started, committed)
    return result
  }
}
