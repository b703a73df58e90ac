import { and, asc, count, eq, gt, lt, lte, sql } from 'drizzle-orm'
import type { PgTransactionConfig } from 'drizzle-orm/pg-core'
import { databaseError, isRetryable, pgInternals, rowsOf, type AtlasPgDatabase, type DrizzlePgDatabase, type PgTransaction as Transaction, type RunTransaction } from './db/postgres.js'
import { events, mutations, revocations, tasks, teamSequences, type TaskRow } from './db/pg-schema.js'
import type { Task, TaskInput, TaskPatch } from '../protocol/schemas.js'
import type { CommitListener, ListOptions, MutationContext, MutationResult, Revocation, RetentionPolicy, TaskPage, TaskRepository, TaskRepositoryOptions, TeamHistory } from './repository.js'
import type { LoggedEvent } from './types.js'
import {
  checkCurrent, checkTaskValues, CommitNotifier, completeEvent, createdRow, deletedChange, fingerprintOf, listBounds, pageOf,
  patchedRow, replayOf, toTask, type Change
} from './task-records.js'

/**
 * Key of the transaction-level advisory lock every revoke takes: revocation ids then commit in
 * the order they were handed out, so an instance reading `id > last applied` never skips one
 * that commits late. Any fixed bigint, other than the migrations'; this one spells "ATLASREV".
 */
const REVOKE_LOCK = 0x41544c4153524556n

/** How often a transaction is tried when PostgreSQL aborted it as a deadlock or serialization failure. */
const ATTEMPTS = 3

/** The markPublished statement's rows at most (two parameters each; PostgreSQL allows 65,535). */
const MARK_CHUNK = 1000

/**
 * Another transaction claimed a mutation id and its row was gone when read back (pruned in
 * between): trying again claims it afresh.
 */
class ClaimVanished extends Error {}

/**
 * The repository on PostgreSQL, shared by several hosts. Each mutation is one READ COMMITTED
 * transaction whose row locks are always taken in the same order (mutation id, then task, then
 * the team's seq row), so concurrent mutations from any number of hosts queue instead of
 * deadlocking: the mutation id's claim makes a retry wait for the first attempt, the task's
 * `FOR UPDATE` makes a patch see the version before it, and the team's seq row hands out seqs
 * that commit in order and without gaps.
 */
export class PostgresTaskRepository implements TaskRepository {
  readonly dialect = 'postgresql'
  readonly #db: DrizzlePgDatabase
  readonly #begin: RunTransaction
  readonly #connectTimeoutMs: number
  readonly #now: () => number
  readonly #commits: CommitNotifier

  constructor (db: AtlasPgDatabase, options: TaskRepositoryOptions = {}) {
    const { drizzle, transaction, connectTimeoutMs } = pgInternals(db)
    this.#db = drizzle
    this.#begin = transaction
    this.#connectTimeoutMs = connectTimeoutMs
    this.#now = options.now ?? Date.now
    this.#commits = new CommitNotifier(this)
  }

  onCommit (listener: CommitListener): () => void {
    return this.#commits.add(listener)
  }

  async list (teamId: string, options: ListOptions = {}): Promise<TaskPage> {
    const { limit, after } = listBounds(options)
    // One snapshot for the tasks and the seq they are current as of.
    return this.#transaction(async (tx) => {
      const query = tx.select().from(tasks)
        .where(after === undefined
          ? eq(tasks.teamId, teamId)
          : and(eq(tasks.teamId, teamId), sql`(${tasks.createdAt}, ${tasks.id}) > (${after.createdAt}, ${after.id})`))
        .orderBy(asc(tasks.createdAt), asc(tasks.id))
      // One row more than the page tells whether another page follows.
      const rows = await (limit === undefined ? query : query.limit(limit + 1))
      const [head] = await tx.select({ seq: teamSequences.seq }).from(teamSequences).where(eq(teamSequences.teamId, teamId))
      return pageOf(rows, limit, head?.seq ?? 0)
    }, { isolationLevel: 'repeatable read', accessMode: 'read only' })
  }

  async get (teamId: string, taskId: string): Promise<Task | undefined> {
    const [row] = await this.#read(() => this.#db.select().from(tasks).where(and(eq(tasks.teamId, teamId), eq(tasks.id, taskId))))
    return row === undefined ? undefined : toTask(row)
  }

  async create (teamId: string, input: TaskInput, context: MutationContext): Promise<MutationResult> {
    checkTaskValues(input)
    return this.#mutate(teamId, context, ['create', input], async (tx, now) => {
      const { row, change } = createdRow(teamId, input, context.actor, now)
      await tx.insert(tasks).values(row)
      return change
    })
  }

  async update (teamId: string, taskId: string, patch: TaskPatch, context: MutationContext): Promise<MutationResult> {
    checkTaskValues(patch)
    return this.#mutate(teamId, context, ['update', taskId, patch], async (tx, now) => {
      const { set, change } = patchedRow(await this.#current(tx, teamId, taskId, context), patch, context.actor, now)
      if (set !== null) await tx.update(tasks).set(set).where(eq(tasks.id, taskId))
      return change
    })
  }

  async delete (teamId: string, taskId: string, context: MutationContext): Promise<MutationResult> {
    return this.#mutate(teamId, context, ['delete', taskId], async (tx) => {
      const current = await this.#current(tx, teamId, taskId, context)
      await tx.delete(tasks).where(eq(tasks.id, taskId))
      return deletedChange(current)
    })
  }

  async headSeq (teamId: string): Promise<number> {
    return (await this.history(teamId)).head
  }

  async history (teamId: string): Promise<TeamHistory> {
    const [row] = await this.#read(() => this.#db.select({ seq: teamSequences.seq, prunedThrough: teamSequences.prunedThrough })
      .from(teamSequences).where(eq(teamSequences.teamId, teamId)))
    return { head: row?.seq ?? 0, prunedThrough: row?.prunedThrough ?? 0 }
  }

  async eventsAfter (teamId: string, afterSeq: number, limit: number): Promise<LoggedEvent[]> {
    return this.#read(() => this.#db.select({ teamId: events.teamId, seq: events.seq, payload: events.payload })
      .from(events)
      .where(and(eq(events.teamId, teamId), gt(events.seq, afterSeq)))
      .orderBy(asc(events.seq))
      .limit(limit))
  }

  async unpublished (before: number, limit: number): Promise<LoggedEvent[]> {
    return this.#read(() => this.#db.select({ teamId: events.teamId, seq: events.seq, payload: events.payload })
      .from(events)
      .where(and(eq(events.published, 0), lt(events.createdAt, before)))
      .orderBy(asc(events.teamId), asc(events.seq))
      .limit(limit))
  }

  async markPublished (published: ReadonlyArray<{ teamId: string, seq: number }>): Promise<void> {
    if (published.length === 0) return
    // Rows locked in one order by every instance, so two instances marking overlapping events
    // do not deadlock.
    const sorted = [...published].sort((a, b) => a.teamId < b.teamId ? -1 : a.teamId > b.teamId ? 1 : a.seq - b.seq)
    await this.#transaction(async (tx) => {
      for (let i = 0; i < sorted.length; i += MARK_CHUNK) {
        const keys = sorted.slice(i, i + MARK_CHUNK).map(({ teamId, seq }) => sql`(${teamId}, ${seq}::integer)`)
        await tx.update(events).set({ published: 1 })
          .where(sql`(${events.teamId}, ${events.seq}) in (${sql.join(keys, sql`, `)})`)
      }
    })
  }

  async prune (policy: RetentionPolicy): Promise<{ events: number, mutationIds: number }> {
    const now = this.#now()
    const { maxEventsPerTeam = 0, maxEventAgeMs = 0, mutationIdTtlMs = 0 } = policy
    const teams = await this.#read(() => this.#db.select({ teamId: teamSequences.teamId }).from(teamSequences))
    let removed = 0
    // A short transaction per team: its seq row locked, so none of its mutations commits
    // meanwhile (no new event can appear below the cutoff); other teams go on.
    for (const { teamId } of teams) {
      removed += await this.#transaction(async (tx) => {
        const [team] = await tx.select().from(teamSequences).where(eq(teamSequences.teamId, teamId)).for('update')
        if (team === undefined) return 0
        let cutoff = team.prunedThrough
        if (maxEventsPerTeam > 0) cutoff = Math.max(cutoff, team.seq - maxEventsPerTeam)
        if (maxEventAgeMs > 0) {
          const [old] = await tx.select({ seq: sql<number | null>`max(${events.seq})` }).from(events)
            .where(and(eq(events.teamId, teamId), lt(events.createdAt, now - maxEventAgeMs)))
          cutoff = Math.max(cutoff, old?.seq ?? 0)
        }
        const [first] = await tx.select({ seq: sql<number | null>`min(${events.seq})` }).from(events)
          .where(and(eq(events.teamId, teamId), eq(events.published, 0)))
        if (first?.seq != null) cutoff = Math.min(cutoff, first.seq - 1)
        if (cutoff <= team.prunedThrough) return 0
        const deleted = await tx.delete(events).where(and(eq(events.teamId, teamId), lte(events.seq, cutoff))).returning({ seq: events.seq })
        await tx.update(teamSequences).set({ prunedThrough: cutoff }).where(eq(teamSequences.teamId, teamId))
        return deleted.length
      })
    }
    if (mutationIdTtlMs <= 0) return { events: removed, mutationIds: 0 }
    const forgotten = await this.#transaction(async (tx) => {
      const gone = await tx.delete(mutations).where(lt(mutations.createdAt, now - mutationIdTtlMs)).returning({ one: sql`1` })
      await tx.delete(revocations).where(lt(revocations.createdAt, now - mutationIdTtlMs))
      return gone.length
    })
    return { events: removed, mutationIds: forgotten }
  }

  async revoke (userId: string, teamId: string | null): Promise<Revocation> {
    return this.#transaction(async (tx) => {
      await tx.execute(sql`select pg_advisory_xact_lock(${sql.raw(REVOKE_LOCK.toString())})`)
      const [revocation] = await tx.insert(revocations).values({ userId, teamId, createdAt: this.#now() })
        .returning({ id: revocations.id, userId: revocations.userId, teamId: revocations.teamId })
      return revocation
    })
  }

  async revocationsAfter (afterId: number, limit: number): Promise<Revocation[]> {
    return this.#read(() => this.#db.select({ id: revocations.id, userId: revocations.userId, teamId: revocations.teamId })
      .from(revocations).where(gt(revocations.id, afterId)).orderBy(asc(revocations.id)).limit(limit))
  }

  async lastRevocationId (): Promise<number> {
    const [row] = await this.#read(() => this.#db.select({ id: sql<number | null>`max(${revocations.id})`.mapWith(Number) }).from(revocations))
    return row?.id ?? 0
  }

  async unpublishedCount (): Promise<number> {
    // The partial index on unpublished events answers it.
    const [row] = await this.#read(() => this.#db.select({ n: count() }).from(events).where(eq(events.published, 0)))
    return row?.n ?? 0
  }

  /** Whether the server answers, within the connect timeout, and is a primary (not a standby in recovery). */
  async writable (): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), this.#connectTimeoutMs) })
    const answered = rowsOf<{ writable: boolean }>(this.#db, sql`select not pg_is_in_recovery() as writable`)
      .then(([row]) => row?.writable === true, () => false)
    try {
      return await Promise.race([answered, timedOut])
    } finally {
      clearTimeout(timer)
    }
  }

  /** The task row a mutation works on, locked until its transaction ends, checked against its If-Match. */
  async #current (tx: Transaction, teamId: string, taskId: string, context: MutationContext): Promise<TaskRow> {
    const [row] = await tx.select().from(tasks).where(and(eq(tasks.teamId, teamId), eq(tasks.id, taskId))).for('update')
    return checkCurrent(row, taskId, context)
  }

  /**
   * Runs one mutation in one transaction: the mutation id's claim, the change, the team's next
   * seq, the event, the mutation id's result. Listeners hear of the event once it committed.
   */
  async #mutate (teamId: string, context: MutationContext, request: unknown[], change: (tx: Transaction, now: number) => Promise<Change>): Promise<MutationResult> {
    const { mutationId, actor } = context
    const fingerprint = fingerprintOf(context, request)
    let committed: LoggedEvent | undefined
    const started = this.#commits.started()
    const result = await this.#transaction(async (tx): Promise<MutationResult> => {
      committed = undefined
      const now = this.#now()
      const key = mutationId === undefined ? undefined : and(eq(mutations.teamId, teamId), eq(mutations.actor, actor), eq(mutations.mutationId, mutationId))
      if (mutationId !== undefined && key !== undefined) {
        // Claim the id before anything else. A concurrent request with the same id (another
        // host's retry) blocks on this insert until the first commits, then finds its row.
        const claimed = await tx.insert(mutations).values({ teamId, actor, mutationId, fingerprint, result: '', createdAt: now })
          .onConflictDoNothing().returning({ one: sql`1` })
        if (claimed.length === 0) {
          const [seen] = await tx.select({ fingerprint: mutations.fingerprint, result: mutations.result }).from(mutations).where(key)
          if (seen === undefined) throw new ClaimVanished()
          return replayOf(seen, fingerprint, mutationId)
        }
      }
      const { task, event: partial } = await change(tx, now)
      let event = null
      if (partial !== null) {
        // The seq row's lock, held to commit, serialises the team's mutations: seqs commit in order.
        const [{ seq }] = await tx.insert(teamSequences).values({ teamId, seq: 1 })
          .onConflictDoUpdate({ target: teamSequences.teamId, set: { seq: sql`${teamSequences.seq} + 1` } })
          .returning({ seq: teamSequences.seq })
        const completed = completeEvent(teamId, seq, partial, task, context, now)
        event = completed.event
        committed = completed.logged
        await tx.insert(events).values({ teamId, seq, type: event.type, taskId: task.id, payload: committed.payload, createdAt: now })
      }
      if (key !== undefined) await tx.update(mutations).set({ result: JSON.stringify(task) }).where(key)
      return { task, event, replayed: false }
    })
    this.#commits.committed(started, committed)
    return result
  }

  /**
   * Runs `fn` in a transaction, again when PostgreSQL aborted it as a deadlock or serialization
   * failure (the lock order should make these impossible; cheap insurance). Connection failures
   * reject with DatabaseUnavailableError; the catalogue's errors pass through.
   */
  async #transaction<T> (fn: (tx: Transaction) => Promise<T>, config?: PgTransactionConfig): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#begin(fn, config)
      } catch (err) {
        if (attempt < ATTEMPTS && (isRetryable(err) || err instanceof ClaimVanished)) continue
        throw databaseError(err)
      }
    }
  }

  /** One statement outside a transaction, its connection failures mapped as #transaction's. */
  async #read<T> (query: () => PromiseLike<T>): Promise<T> {
    try {
      return await query()
    } catch (err) {
      throw databaseError(err)
    }
  }
}
