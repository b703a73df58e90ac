import type { Task, TaskEvent, TaskInput, TaskPatch } from '../protocol/schemas.js'
import type { LoggedEvent } from './types.js'

// The repository contract: what the hub, the routes, the plugins and an integrator's own routes
// call. Two implementations keep it: SqliteTaskRepository (lib/sqlite-repository.ts, one host,
// the default) and PostgresTaskRepository (lib/postgres-repository.ts, several hosts). Every
// method answers with a promise, because PostgreSQL's drivers are asynchronous; SQLite's answers
// are already settled when they are returned.

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
  /** Increasing in the order revocations committed: an instance applies the ones after the last id it applied. */
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

/** Where a team's retained history stands: events after `prunedThrough` up to `head` are in the log. */
export interface TeamHistory {
  head: number
  prunedThrough: number
}

export interface TaskRepositoryOptions {
  /** Clock, injectable for tests. */
  now?: () => number
}

/**
 * The tasks of every team, and each team's event log. Every mutation changes the task row and
 * appends its event with the team's next seq in one transaction, so there is never an event
 * without a committed change nor a change without an event, and a team's seqs are gapless and
 * committed in order. Listeners registered with `onCommit` hear about each event this
 * repository committed, after its transaction committed.
 */
export interface TaskRepository {
  /** Which database keeps the log. */
  readonly dialect: 'sqlite' | 'postgresql'
  /** Calls `listener` with every event this repository commits. Returns an unsubscribe function. */
  onCommit (listener: CommitListener): () => void
  /**
   * A team's tasks, oldest first (by createdAt, then id), and the event seq they are current as
   * of, read in one snapshot. With `limit`, one page of them: `nextCursor` (null on the last
   * page) passed back as `cursor` gives the tasks after this page's last one.
   */
  list (teamId: string, options?: ListOptions): Promise<TaskPage>
  get (teamId: string, taskId: string): Promise<Task | undefined>
  create (teamId: string, input: TaskInput, context: MutationContext): Promise<MutationResult>
  /** Field-level last-write-wins: only the fields in `patch` are written. */
  update (teamId: string, taskId: string, patch: TaskPatch, context: MutationContext): Promise<MutationResult>
  delete (teamId: string, taskId: string, context: MutationContext): Promise<MutationResult>
  /** The last seq handed out for a team (0 before its first event). */
  headSeq (teamId: string): Promise<number>
  /** A client that last saw seq s can resume iff prunedThrough <= s <= head. */
  history (teamId: string): Promise<TeamHistory>
  /** Events of a team with seq > `afterSeq`, in order, at most `limit`. */
  eventsAfter (teamId: string, afterSeq: number, limit: number): Promise<LoggedEvent[]>
  /** Events that no broker has accepted yet, committed before `before` (epoch ms), in seq order per team. */
  unpublished (before: number, limit: number): Promise<LoggedEvent[]>
  markPublished (published: ReadonlyArray<{ teamId: string, seq: number }>): Promise<void>
  /**
   * Drops events outside the retention policy and forgets old mutation ids. Unpublished events
   * are kept (they are still the outbox), and so is everything after them, so the retained
   * history of a team always stays one unbroken run of seqs.
   */
  prune (policy: RetentionPolicy): Promise<{ events: number, mutationIds: number }>
  /** Records a revocation; every instance applies it to its open sockets (see `revocationsAfter`). */
  revoke (userId: string, teamId: string | null): Promise<Revocation>
  /** Revocations recorded after `afterId`, oldest first, at most `limit`. */
  revocationsAfter (afterId: number, limit: number): Promise<Revocation[]>
  /** The id of the last revocation recorded (0: none): an instance starting applies only later ones. */
  lastRevocationId (): Promise<number>
  /** Events no broker has taken yet (the outbox's backlog). */
  unpublishedCount (): Promise<number>
  /** Whether a write could start now (false: the database is down, read-only, or locked past its timeout). Never rejects. */
  writable (): Promise<boolean>
}
