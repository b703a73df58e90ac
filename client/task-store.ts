import { Backoff, type BackoffOptions } from './backoff.js'
import type { AtlasClient, Snapshot } from './client.js'
import { Emitter } from './emitter.js'
import { AtlasClientError } from './errors.js'
import { AtlasApiError, type MutationResponse } from './http.js'
import { newMutationId } from './ids.js'
import { defaultQueueStorage, type QueueStorage } from './queue-storage.js'
import { ErrorCode, createdTaskFields } from '../protocol/constants.js'
import type { Task, TaskEvent, TaskInput, TaskPatch } from '../protocol/schemas.js'

export type MutationKind = 'create' | 'update' | 'delete'

/** How an optimistic mutation ended. */
export type MutationOutcome =
  | { ok: true, mutationId: string, kind: MutationKind, taskId: string, task: Task | undefined }
  | {
    ok: false
    mutationId: string
    kind: MutationKind
    taskId: string
    /** Why it was undone (or, with `queued`, why it is not done yet), in words fit for a person. */
    reason: string
    error: AtlasApiError
    /** The task as it stands after the rollback (for a 412: the server's current one). */
    task: Task | undefined
    /**
     * Not undone: the store stopped (its `close()`, or the client stopped) before the server
     * took it. It stays in the persisted queue, and the next store of this user and team sends it.
     */
    queued?: true
  }

/** The mutations the server has not taken yet, kept in `storage` under `key:<userId>:<teamId>`. */
export interface PersistOptions {
  /** Default: `globalThis.localStorage` where there is one, else memory (gone with the process). */
  storage?: QueueStorage
  /** Prefix of the storage key (default `atlas-realtime:queue`); the user and team are appended. */
  key?: string
}

export interface TaskStoreOptions {
  /** Send If-Match with the version this client had, so a stale edit is refused (default true). */
  ifMatch?: boolean
  /** Mutation id generator (default random UUIDs); injectable for tests. */
  newMutationId?: () => string
  /** Where unsent mutations survive a reload (default: localStorage, else memory); `false`: nowhere. */
  persist?: PersistOptions | false
  /** Delays between attempts of a mutation that got no answer (default 500 ms doubling to 30 s, full jitter). */
  retry?: BackoffOptions
}

/**
 * A mutation the server refused because the world moved under it: 412 (someone changed the
 * task first), 404 (the task was deleted meanwhile) or 403 (the user lost the team). It waits,
 * unsent and out of `tasks`, until the app calls one of the two resolutions.
 */
export interface TaskConflict {
  mutationId: string
  kind: MutationKind
  /** The task's id (for a create: its temporary `local:` id). */
  taskId: string
  status: number
  error: AtlasApiError
  /** In words fit for a person. */
  reason: string
  /** The task as this change would make it (null: a delete). */
  mine: Task | null
  /** The task as the server has it (null: it has none, e.g. deleted; for a 403, the last one known). */
  theirs: Task | null
  /**
   * Sends mine again: 412, over their version (If-Match: theirs); 404, as a new task with my
   * fields (a create, with a new mutation id); 403, as it was (e.g. after the membership came back).
   */
  keepMine (): void
  /** Drops mine, and the later changes of the same task that were built on it (each `rolledBack`). */
  takeTheirs (): void
}

export interface TaskStoreEvents {
  /** The visible tasks changed (`tasks` is a new array). */
  change: Task[]
  /** A team event was applied; `previous` is the task before it (for activity feeds). */
  applied: { event: TaskEvent, previous: Task | undefined }
  confirmed: MutationOutcome & { ok: true }
  rolledBack: MutationOutcome & { ok: false }
  /**
   * A 412, 404 or 403 that the app must resolve (`keepMine()` or `takeTheirs()`). With no
   * listener for this event, the store takes theirs itself and emits `rolledBack`, as before
   * offline support.
   */
  conflict: TaskConflict
  /**
   * A mutation got no answer (or 408, 429, 5xx, 401): it stays applied and queued, and is sent
   * again with the same Idempotency-Key after `delayMs`, or at once when the connection opens.
   */
  retrying: { mutationId: string, kind: MutationKind, taskId: string, attempt: number, delayMs: number, error: AtlasApiError, reason: string }
  snapshot: Snapshot
  /**
   * The client dropped this team (`forbidden_team`): the user is not, or no longer, a member (its
   * membership was revoked, or a refreshed credential no longer lists it). No event comes any
   * more: `tasks` stays as it was last known (clear it from view), `ready` turns false, a `start()` waiting rejects,
   * mutations the server already took are confirmed from its answers and those still on their way
   * are refused by its 403 (a `conflict`, or `rolledBack` without a conflict listener). `start()` again follows the team if it is given back.
   */
  dropped: AtlasClientError
}

interface Pending {
  mutationId: string
  kind: MutationKind
  /** The task's id; for a create (and the changes queued behind it), the temporary id the task shows under until the server's. */
  taskId: string
  input?: TaskInput
  patch?: TaskPatch
  createdAt: string
  /** The version this change is based on (its If-Match), fixed when it was made. */
  ifMatch: number | undefined
  useIfMatch: boolean
  /** Based on the outcome of the previous queued change of the same task: its If-Match comes from that answer. */
  chained: boolean
  /** The task as the user saw it when making the change (the conflict's `mine` is built on it). */
  base: Task | undefined
  attempts: number
  /** Set when the HTTP call succeeded: the server took the mutation. */
  acked?: { taskId: string, version: number | undefined, task: Task | null }
  /** Acked before a list fetch started, so that list reflects it. */
  covered?: boolean
  conflict?: TaskConflict
  /** Absent for a mutation restored from storage (its promise belonged to an earlier page) or already settled. */
  settle?: (outcome: MutationOutcome) => void
}

/** One queued mutation as stored: everything needed to send it again, byte for byte. */
interface StoredMutation {
  mutationId: string
  kind: MutationKind
  taskId: string
  input?: TaskInput
  patch?: TaskPatch
  createdAt: string
  ifMatch: number | null
  useIfMatch: boolean
  chained: boolean
  base: Task | null
  attempts: number
}

interface StoredQueue {
  format: 1
  userId: string
  teamId: string
  mutations: StoredMutation[]
}

const TEMP_PREFIX = 'local:'
const DEFAULT_KEY = 'atlas-realtime:queue'
const EDITABLE = ['title', 'description', 'status', 'assignee', 'dueDate'] as const

/**
 * One team's tasks, kept current from the list endpoint and the team's events, with
 * offline-first mutations. A change shows at once (as a pending layer over the server's state)
 * and joins a queue that is persisted (localStorage by default) before anything is sent; the
 * queue goes out one request at a time, in the order the changes were made, each with the
 * Idempotency-Key it got when it was made. A change is confirmed when the event carrying its
 * mutation id arrives, or when the server's state is found to already include it.
 *
 * What an answer does: none (a network failure), 408, 429, 5xx or 401: the change stays and is
 * sent again with the same key, after a backoff or as soon as the connection opens (a request
 * whose answer was lost is then answered as a replay, never applied twice). 412, 404 of an
 * edited task, 403: a `conflict` for the app to resolve (rolled back when nobody listens).
 * Any other refusal (400, 409, 413, a 404 of a delete, …): rolled back with its reason.
 */
export class TaskStore extends Emitter<TaskStoreEvents> {
  readonly teamId: string
  readonly #client: AtlasClient
  readonly #ifMatch: boolean
  readonly #newId: () => string
  readonly #storage: QueueStorage | undefined
  readonly #keyPrefix: string
  /** The storage key, fixed once the user is known; undefined: not restored yet, or not persisted. */
  #key: string | undefined
  /** The persisted queue was read (at the first list): sending may start, saving may overwrite it. */
  #restored: boolean
  readonly #retry: Backoff
  #retryTimer: ReturnType<typeof setTimeout> | undefined
  /** The mutation whose request is on its way (one at a time). */
  #inFlight: Pending | undefined
  /** Temporary ids of creates the server took, and the ids it gave them. */
  readonly #localIds = new Map<string, string>()
  /** The server's state as last heard. */
  readonly #confirmed = new Map<string, Task>()
  /** Mutations not yet confirmed nor rolled back, oldest first (the queue: those not acked). */
  #pending: Pending[] = []
  /** Per task, the version the server answered our last successful call with. */
  readonly #ackedVersion = new Map<string, number>()
  #view: Task[] = []
  #seq = -1
  #ready = false
  readonly #readyWaiters: Array<{ resolve: () => void, reject: (error: AtlasClientError) => void }> = []
  readonly #unlisten: Array<() => void>
  /** After `close()`: no event will come to confirm anything. */
  #closed = false
  /** The client dropped the team (until the next `start()`): no event will come either. */
  #dropped = false

  constructor (client: AtlasClient, teamId: string, options: TaskStoreOptions = {}) {
    super()
    this.#client = client
    this.teamId = teamId
    this.#ifMatch = options.ifMatch ?? true
    this.#newId = options.newMutationId ?? newMutationId
    this.#storage = options.persist === false ? undefined : options.persist?.storage ?? defaultQueueStorage()
    this.#keyPrefix = (options.persist === false ? undefined : options.persist?.key) ?? DEFAULT_KEY
    this.#restored = this.#storage === undefined
    this.#retry = new Backoff({ baseMs: 500, capMs: 30_000, ...options.retry })
    this.#unlisten = [
      client.on('snapshot', (snapshot) => { if (snapshot.teamId === teamId) this.#onSnapshot(snapshot) }),
      client.on('event', (event) => { if (event.teamId === teamId) this.#onEvent(event) }),
      client.on('resyncing', ({ teamId: id }) => {
        if (id !== teamId) return
        for (const pending of this.#pending) if (pending.acked !== undefined) pending.covered = true
      }),
      client.on('error', (error) => {
        if (error.code === ErrorCode.FORBIDDEN_TEAM && error.teamId === teamId) this.#onDropped(new AtlasClientError('forbidden_team', error.message, teamId))
      }),
      client.on('state', (state) => {
        // The connection is back: what waits goes now, not at the end of its backoff.
        if (state === 'open') this.#sendNow()
      }),
      client.on('stopped', (error) => {
        this.#fail(error)
        this.#stopTimer()
        this.#settleFromAnswers()
        this.#settleUnsent()
      })
    ]
  }

  /** Tasks as this client should show them: the server's, with pending mutations on top, oldest first. */
  get tasks (): Task[] { return this.#view }
  /** Whether the first list has arrived. */
  get ready (): boolean { return this.#ready }
  /** The last team seq applied. */
  get seq (): number { return this.#seq }
  /** Number of mutations waiting for confirmation (sent or not, in conflict or not). */
  get pendingCount (): number { return this.#pending.length }
  /** Number of mutations the server has not taken yet (queued, retrying or in conflict). */
  get unsentCount (): number { return this.#pending.filter((p) => p.acked === undefined).length }
  /** Conflicts waiting for the app's decision, oldest first. */
  get conflicts (): TaskConflict[] { return this.#pending.flatMap((p) => p.conflict === undefined ? [] : [p.conflict]) }

  get (taskId: string): Task | undefined { return this.#view.find((task) => task.id === taskId) }

  /** Whether the task has a mutation waiting for confirmation (or is not created yet); not one held by a conflict. */
  isPending (taskId: string): boolean {
    const held = this.#held()
    return this.#pending.some((p) => !held.has(p) && (p.taskId === taskId || p.acked?.taskId === taskId))
  }

  /** Whether the task has a change the server has not taken yet (offline, retrying); not one held by a conflict. */
  isUnsent (taskId: string): boolean {
    const held = this.#held()
    return this.#pending.some((p) => !held.has(p) && p.acked === undefined && p.taskId === taskId)
  }

  /**
   * Follows the team through the client; resolves when its first list arrived (a list is
   * fetched once the client's socket has the team's `subscribed`, even when the client followed
   * the team already, so that no event falls between the list and the subscription). Rejects with an
   * AtlasClientError: `forbidden_team` (not the user's team), or, when the client stops first
   * (or had stopped), `unauthorized`, `revoked`, `retries_exhausted` or `closed` (also on this
   * store's `close()`). Before the client's first `connect()` it waits for it.
   */
  async start (): Promise<void> {
    if (this.#closed) throw new AtlasClientError('closed', 'atlas store: closed')
    const stopped = this.#client.stoppedBy
    if (stopped !== undefined) throw new AtlasClientError(stopped.code, stopped.message, stopped.teamId)
    this.#dropped = false
    // Waiting first: a refusal can be told synchronously, by subscribe itself.
    const ready = this.#ready ? undefined : new Promise<void>((resolve, reject) => this.#readyWaiters.push({ resolve, reject }))
    if (this.#client.teams.includes(this.teamId)) this.#client.resync(this.teamId)
    else this.#client.subscribe(this.teamId)
    await ready
  }

  /**
   * Stops listening (the client keeps its subscription) and sending. A `start()` still waiting
   * rejects (`closed`); mutations the server already took are confirmed from its answers; those
   * it has not taken stay in the persisted queue (their promises resolve `ok: false, queued: true`)
   * for the next store of this user and team.
   */
  close (): void {
    if (this.#closed) return
    this.#closed = true
    for (const unlisten of this.#unlisten) unlisten()
    this.#stopTimer()
    this.#fail(new AtlasClientError('closed', 'atlas store: closed'))
    this.#settleFromAnswers()
    this.#settleUnsent()
  }

  #fail (error: AtlasClientError): void {
    for (const waiter of this.#readyWaiters.splice(0)) waiter.reject(error)
  }

  #onDropped (error: AtlasClientError): void {
    this.#dropped = true
    // A later start() waits for the team's list again: what the store holds is no longer current.
    this.#ready = false
    this.#fail(error)
    this.#settleFromAnswers()
    this.emit('dropped', error)
  }

  /** No event will confirm anything any more (the store or the client stopped, or the team was dropped). */
  #halted (): boolean {
    return this.#closed || this.#dropped || this.#client.stoppedBy !== undefined
  }

  /**
   * Confirms the mutations the server took from its own answers: their events will not reach
   * this store, and without this their promises would never settle.
   */
  #settleFromAnswers (): void {
    for (const pending of [...this.#pending]) {
      const acked = pending.acked
      if (acked === undefined) continue
      if (pending.kind === 'delete') {
        this.#confirmed.delete(acked.taskId)
      } else if (acked.task !== null) {
        const known = this.#confirmed.get(acked.task.id)
        if (known === undefined || known.version < acked.task.version) this.#confirmed.set(acked.task.id, acked.task)
      }
      this.#confirm(pending)
    }
  }

  /**
   * The store or the client stopped: mutations not taken yet (and not on their way: their answer
   * settles them) stay queued and persisted, and their promises are told so.
   */
  #settleUnsent (): void {
    for (const pending of this.#pending) {
      if (pending.acked !== undefined || pending === this.#inFlight || pending.settle === undefined) continue
      this.#settleQueued(pending)
    }
  }

  #settleQueued (pending: Pending): void {
    const settle = pending.settle
    if (settle === undefined) return
    pending.settle = undefined
    settle({
      ok: false,
      mutationId: pending.mutationId,
      kind: pending.kind,
      taskId: pending.taskId,
      reason: 'not sent yet: it stays queued and is sent by the next store of this user and team',
      error: new AtlasApiError('atlas store: stopped before the server took the mutation', 0, 'QUEUED'),
      task: this.get(pending.taskId),
      queued: true
    })
  }

  async create (input: TaskInput): Promise<MutationOutcome> {
    const mutationId = this.#newId()
    return await this.#enqueue({ mutationId, kind: 'create', taskId: TEMP_PREFIX + mutationId, input, ifMatch: undefined, useIfMatch: false, chained: false, base: undefined })
  }

  async update (taskId: string, patch: TaskPatch, options: { ifMatch?: boolean } = {}): Promise<MutationOutcome> {
    const id = this.#known(taskId)
    return await this.#enqueue({ mutationId: this.#newId(), kind: 'update', taskId: id, patch, ...this.#basis(id, options.ifMatch) })
  }

  async remove (taskId: string, options: { ifMatch?: boolean } = {}): Promise<MutationOutcome> {
    const id = this.#known(taskId)
    return await this.#enqueue({ mutationId: this.#newId(), kind: 'delete', taskId: id, ...this.#basis(id, options.ifMatch) })
  }

  /** The id to address: a created task's server id once known; a temporary id only while its create is queued. */
  #known (taskId: string): string {
    const id = this.#localIds.get(taskId) ?? taskId
    if (id.startsWith(TEMP_PREFIX) && !this.#pending.some((p) => p.kind === 'create' && p.taskId === id)) {
      throw new Error(`atlas store: task ${taskId} is not known (its creation was dropped)`)
    }
    return id
  }

  /**
   * What a change of `taskId` is based on: the version this client had when it was made (fixed
   * now, so that an edit sent much later still says which version it meant to change), or, when
   * earlier changes of the task are still unsent, the version the last of them will produce.
   */
  #basis (taskId: string, perCall: boolean | undefined): Pick<Pending, 'ifMatch' | 'useIfMatch' | 'chained' | 'base'> {
    const chained = this.#pending.some((p) => p.acked === undefined && p.taskId === taskId)
    return { ifMatch: chained ? undefined : this.#knownVersion(taskId), useIfMatch: perCall ?? this.#ifMatch, chained, base: this.get(taskId) }
  }

  /** The server's last word on the task's version, from events or our own calls. */
  #knownVersion (taskId: string): number | undefined {
    const known = Math.max(this.#confirmed.get(taskId)?.version ?? 0, this.#ackedVersion.get(taskId) ?? 0)
    return known === 0 ? undefined : known
  }

  async #enqueue (fields: Omit<Pending, 'settle' | 'createdAt' | 'attempts'>): Promise<MutationOutcome> {
    let settle!: (outcome: MutationOutcome) => void
    const outcome = new Promise<MutationOutcome>((resolve) => { settle = resolve })
    const pending: Pending = { ...fields, createdAt: new Date().toISOString(), attempts: 0, settle }
    this.#pending.push(pending)
    // Persisted before anything is sent: a reload from here on keeps it, key and all.
    this.#save()
    this.#refresh()
    if (this.#closed || this.#client.stoppedBy !== undefined) this.#settleQueued(pending)
    else this.#kick()
    return await outcome
  }

  // ------------------------------------------------------------------ sending

  /** The oldest unsent mutation not held behind an earlier one of the same task or by a conflict. */
  #next (): Pending | undefined {
    const busy = new Set<string>()
    for (const pending of this.#pending) {
      if (pending.acked !== undefined || busy.has(pending.taskId)) continue
      busy.add(pending.taskId)
      if (pending.conflict === undefined) return pending
    }
    return undefined
  }

  /** Sends the next mutation, unless one is on its way, a retry is waiting, or the store cannot send. */
  #kick (): void {
    if (this.#inFlight !== undefined || this.#retryTimer !== undefined || !this.#restored) return
    if (this.#closed || this.#client.stoppedBy !== undefined) return
    const next = this.#next()
    if (next === undefined) return
    if (next.kind !== 'create' && next.taskId.startsWith(TEMP_PREFIX)) {
      // The create it builds on was dropped: there is no task to change.
      this.#rollBack(next, new AtlasApiError('the task it changes was never created', 0, 'NOT_CREATED'))
      this.#kick()
      return
    }
    if (next.chained) {
      // The change it was based on is no longer queued (answered before a reload, or refused):
      // it is based on the version the server last told.
      next.chained = false
      next.ifMatch = this.#knownVersion(next.taskId)
    }
    next.attempts++
    this.#inFlight = next
    void this.#send(next)
  }

  async #send (pending: Pending): Promise<void> {
    const mutation = { mutationId: pending.mutationId, ifMatch: pending.useIfMatch ? pending.ifMatch : undefined }
    let response: MutationResponse | undefined
    let error: AtlasApiError | undefined
    try {
      const api = this.#client.api
      response = pending.kind === 'create'
        ? await api.create(this.teamId, pending.input ?? { title: '' }, { mutationId: pending.mutationId })
        : pending.kind === 'update'
          ? await api.update(this.teamId, pending.taskId, pending.patch ?? {}, mutation)
          : await api.delete(this.teamId, pending.taskId, mutation)
    } catch (err) {
      error = err instanceof AtlasApiError ? err : new AtlasApiError((err as Error)?.message ?? String(err), 0, 'CLIENT_ERROR')
    }
    this.#inFlight = undefined
    if (response !== undefined) this.#onAnswer(pending, response)
    else if (error !== undefined) this.#onRefusal(pending, error)
    this.#kick()
  }

  /** Now: the connection opened, so what waits goes without waiting out its backoff. */
  #sendNow (): void {
    this.#retry.reset()
    this.#stopTimer()
    this.#kick()
  }

  #stopTimer (): void {
    clearTimeout(this.#retryTimer)
    this.#retryTimer = undefined
  }

  #onAnswer (pending: Pending, response: MutationResponse): void {
    this.#retry.reset()
    const taskId = response.task?.id ?? pending.acked?.taskId ?? pending.taskId
    const version = response.task?.version
    if (version !== undefined) this.#ackedVersion.set(taskId, Math.max(version, this.#ackedVersion.get(taskId) ?? 0))
    // Confirmed meanwhile by its event (a retried request whose first answer was lost).
    if (!this.#pending.includes(pending)) return
    pending.acked = { taskId, version, task: response.task }
    this.#landed(pending, taskId, version)
    this.#save()
    if (this.#halted()) this.#settleFromAnswers()
    else this.#settleAcked()
    this.#refresh()
    if (this.#closed || this.#client.stoppedBy !== undefined) this.#settleUnsent()
  }

  /**
   * The server took `pending` (its answer, or its event): the changes queued behind it learn
   * the created task's id and the version to base their If-Match on.
   */
  #landed (pending: Pending, taskId: string, version: number | undefined): void {
    if (pending.kind === 'create' && taskId !== pending.taskId) {
      this.#localIds.set(pending.taskId, taskId)
      for (const other of this.#pending) if (other !== pending && other.acked === undefined && other.taskId === pending.taskId) other.taskId = taskId
    }
    const index = this.#pending.indexOf(pending)
    const next = this.#pending.find((other, i) => i > index && other.acked === undefined && other.taskId === taskId)
    if (next?.chained === true) {
      next.chained = false
      next.ifMatch = version
    }
  }

  #onRefusal (pending: Pending, error: AtlasApiError): void {
    if (!this.#pending.includes(pending)) return
    if (shouldRetry(error)) {
      if (this.#closed || this.#client.stoppedBy !== undefined) {
        this.#settleQueued(pending)
        return
      }
      const delayMs = Math.max(this.#retry.next() ?? this.#retry.capMs, error.retryAfterMs ?? 0)
      this.#save()
      this.#stopTimer()
      this.#retryTimer = setTimeout(() => {
        this.#retryTimer = undefined
        this.#kick()
      }, delayMs)
      this.emit('retrying', { mutationId: pending.mutationId, kind: pending.kind, taskId: pending.taskId, attempt: pending.attempts, delayMs, error, reason: describeRefusal(error) })
      return
    }
    if (isConflict(pending, error)) {
      this.#openConflict(pending, error)
      return
    }
    if (error.status === 404 && pending.kind !== 'create') {
      // The server has no such task: whatever we still show of it is stale.
      this.#confirmed.delete(pending.taskId)
    }
    this.#rollBack(pending, error)
  }

  #openConflict (pending: Pending, error: AtlasApiError): void {
    const mine = this.#mine(pending)
    if (error.status === 412 && error.task !== undefined) {
      const known = this.#confirmed.get(error.task.id)
      if (known === undefined || known.version < error.task.version) this.#confirmed.set(error.task.id, error.task)
    } else if (error.status === 404) {
      this.#confirmed.delete(pending.taskId)
    }
    const theirs = error.status === 412 ? error.task ?? this.#confirmed.get(pending.taskId) ?? null : error.status === 404 ? null : this.#confirmed.get(pending.taskId) ?? null
    if (!this.listens('conflict')) {
      // Nobody resolves conflicts: take theirs, and say so (as the store did before queuing).
      this.#dropWithFollowers(pending, error)
      this.#kick()
      return
    }
    const conflict: TaskConflict = {
      mutationId: pending.mutationId,
      kind: pending.kind,
      taskId: pending.taskId,
      status: error.status,
      error,
      reason: describeRefusal(error),
      mine,
      theirs,
      keepMine: () => { this.#keepMine(pending, conflict) },
      takeTheirs: () => { this.#takeTheirs(pending, conflict) }
    }
    pending.conflict = conflict
    this.#refresh()
    this.emit('conflict', conflict)
  }

  /** The task as `pending` would make it: what the user saw when making it, with the change on top. */
  #mine (pending: Pending): Task | null {
    if (pending.kind === 'delete') return null
    if (pending.kind === 'create') return placeholder(this.teamId, pending, this.#client.userId)
    const base = pending.base ?? this.#confirmed.get(pending.taskId)
    return base === undefined ? null : { ...base, ...pending.patch }
  }

  #keepMine (pending: Pending, conflict: TaskConflict): void {
    if (pending.conflict !== conflict || !this.#pending.includes(pending)) return
    pending.conflict = undefined
    if (conflict.status === 412) {
      // Over their version: the same key (a refused request recorded none), a new If-Match.
      pending.ifMatch = conflict.theirs?.version
      pending.chained = false
      if (conflict.theirs !== null) pending.base = conflict.theirs
    } else if (conflict.status === 404 && pending.kind === 'update') {
      // The task is gone: mine comes back as a new task. A new mutation, so a new key.
      const mutationId = this.#newId()
      const taskId = TEMP_PREFIX + mutationId
      const fields = conflict.mine ?? { ...pending.patch }
      const input = Object.fromEntries(EDITABLE.filter((field) => field in fields).map((field) => [field, (fields as Record<string, unknown>)[field]])) as unknown as TaskInput
      for (const other of this.#pending) {
        if (other !== pending && other.acked === undefined && other.taskId === pending.taskId) {
          other.taskId = taskId
          other.chained = true
          other.ifMatch = undefined
        }
      }
      Object.assign(pending, { mutationId, kind: 'create', taskId, input, patch: undefined, ifMatch: undefined, useIfMatch: false, chained: false, base: undefined })
    }
    this.#save()
    this.#refresh()
    this.#sendNow()
  }

  #takeTheirs (pending: Pending, conflict: TaskConflict): void {
    if (pending.conflict !== conflict || !this.#pending.includes(pending)) return
    this.#dropWithFollowers(pending, conflict.error)
    this.#kick()
  }

  /** Rolls back `pending` and the unsent changes of the same task behind it (they were built on it). */
  #dropWithFollowers (pending: Pending, error: AtlasApiError): void {
    const index = this.#pending.indexOf(pending)
    const followers = this.#pending.filter((other, i) => i > index && other.acked === undefined && other.taskId === pending.taskId)
    this.#rollBack(pending, error)
    for (const other of followers) this.#rollBack(other, error)
  }

  // ------------------------------------------------------------------ persistence

  /**
   * Reads the persisted queue, once, when the first list arrived (the user is known by then):
   * its mutations are older than any made since, so they go first.
   */
  #restore (): void {
    this.#restored = true
    const userId = this.#client.userId
    if (this.#storage === undefined || userId === undefined) return
    this.#key = `${this.#keyPrefix}:${userId}:${this.teamId}`
    let stored: StoredQueue | undefined
    try {
      const text = this.#storage.getItem(this.#key)
      const parsed = text === null ? undefined : JSON.parse(text) as StoredQueue
      if (parsed?.format === 1 && parsed.userId === userId && parsed.teamId === this.teamId && Array.isArray(parsed.mutations)) stored = parsed
    } catch {
      // Unreadable (storage blocked, or not ours): nothing to restore.
    }
    const known = new Set(this.#pending.map((p) => p.mutationId))
    const restored: Pending[] = (stored?.mutations ?? []).filter((m) => !known.has(m.mutationId)).map((m) => ({
      mutationId: m.mutationId,
      kind: m.kind,
      taskId: m.taskId,
      ...(m.input === undefined ? {} : { input: m.input }),
      ...(m.patch === undefined ? {} : { patch: m.patch }),
      createdAt: m.createdAt,
      ifMatch: m.ifMatch ?? undefined,
      useIfMatch: m.useIfMatch,
      chained: m.chained,
      base: m.base ?? undefined,
      attempts: m.attempts
    }))
    this.#pending = [...restored, ...this.#pending]
    this.#save()
  }

  /** Writes the unsent mutations (all of them, replacing what was stored); removes the key when there is none. */
  #save (): void {
    const storage = this.#storage
    const key = this.#key
    const userId = this.#client.userId
    if (storage === undefined || key === undefined || userId === undefined) return
    const mutations: StoredMutation[] = this.#pending.filter((p) => p.acked === undefined).map((p) => ({
      mutationId: p.mutationId,
      kind: p.kind,
      taskId: p.taskId,
      ...(p.input === undefined ? {} : { input: p.input }),
      ...(p.patch === undefined ? {} : { patch: p.patch }),
      createdAt: p.createdAt,
      ifMatch: p.ifMatch ?? null,
      useIfMatch: p.useIfMatch,
      chained: p.chained,
      base: p.base ?? null,
      attempts: p.attempts
    }))
    try {
      if (mutations.length === 0) storage.removeItem(key)
      else storage.setItem(key, JSON.stringify({ format: 1, userId, teamId: this.teamId, mutations } satisfies StoredQueue))
    } catch {
      // Quota exceeded or storage blocked: the queue still works, it just will not survive a reload.
    }
  }

  // ------------------------------------------------------------------ the server's state

  #onSnapshot (snapshot: Snapshot): void {
    this.#confirmed.clear()
    for (const task of snapshot.tasks) this.#confirmed.set(task.id, task)
    this.#seq = snapshot.seq
    // The list was read after these were acked, so it reflects them, whatever happened since.
    for (const pending of [...this.#pending]) {
      if (pending.covered === true) this.#confirm(pending)
    }
    if (!this.#restored) this.#restore()
    this.#settleAcked()
    this.#refresh()
    this.emit('snapshot', snapshot)
    if (!this.#ready) {
      this.#ready = true
      for (const waiter of this.#readyWaiters.splice(0)) waiter.resolve()
    }
    this.#kick()
  }

  #onEvent (event: TaskEvent): void {
    const previous = this.#confirmed.get(event.taskId)
    switch (event.type) {
      case 'task.created':
      case 'task.updated':
        // Never step back: a 412 may already have brought in a newer version than this event's.
        if (previous === undefined || previous.version < event.task.version) this.#confirmed.set(event.taskId, event.task)
        break
      case 'task.deleted':
        this.#confirmed.delete(event.taskId)
        break
    }
    this.#seq = event.seq
    this.#refresh()
    this.emit('applied', { event, previous })
    if (event.mutationId !== null && (this.#client.userId === undefined || event.actor === this.#client.userId)) {
      const mine = this.#pending.find((p) => p.mutationId === event.mutationId)
      if (mine !== undefined) {
        // Its answer may never have come (lost on the way): the event says the server took it.
        if (mine.acked === undefined) this.#landed(mine, event.taskId, event.type === 'task.deleted' ? undefined : event.task.version)
        this.#confirm(mine, event.taskId)
      }
    }
    this.#settleAcked()
  }

  /** Confirms acked mutations whose effect the server's state, as we know it, already shows. */
  #settleAcked (): void {
    for (const pending of [...this.#pending]) {
      const acked = pending.acked
      if (acked === undefined) continue
      const current = this.#confirmed.get(acked.taskId)
      const shown = pending.kind === 'create'
        ? current !== undefined
        // An update is in once the version it produced (or a later one) is here; a no-op
        // produced the version we already had. A task deleted since has nothing to roll back.
        : pending.kind === 'update'
          ? current === undefined || (acked.version !== undefined && current.version >= acked.version)
          : current === undefined
      if (shown) this.#confirm(pending)
    }
  }

  #confirm (pending: Pending, taskId = pending.acked?.taskId ?? pending.taskId): void {
    if (!this.#remove(pending)) return
    const outcome = { ok: true as const, mutationId: pending.mutationId, kind: pending.kind, taskId, task: this.#confirmed.get(taskId) }
    this.#refresh()
    this.emit('confirmed', outcome)
    const settle = pending.settle
    pending.settle = undefined
    settle?.(outcome)
  }

  #rollBack (pending: Pending, error: AtlasApiError): void {
    if (!this.#remove(pending)) return
    const outcome = {
      ok: false as const,
      mutationId: pending.mutationId,
      kind: pending.kind,
      taskId: pending.taskId,
      reason: describeRefusal(error),
      error,
      task: this.#confirmed.get(pending.taskId)
    }
    this.#refresh()
    this.emit('rolledBack', outcome)
    const settle = pending.settle
    pending.settle = undefined
    settle?.(outcome)
  }

  #remove (pending: Pending): boolean {
    const index = this.#pending.indexOf(pending)
    if (index === -1) return false
    this.#pending.splice(index, 1)
    if (pending.acked === undefined) this.#save()
    return true
  }

  /** Mutations kept out of the view: those in conflict, and the unsent changes of their tasks queued behind them. */
  #held (): Set<Pending> {
    const held = new Set<Pending>()
    const blocked = new Set<string>()
    for (const pending of this.#pending) {
      if (pending.acked !== undefined) continue
      if (pending.conflict !== undefined || blocked.has(pending.taskId)) {
        held.add(pending)
        blocked.add(pending.taskId)
      }
    }
    return held
  }

  /** Recomputes the visible tasks: the server's state with every pending mutation applied in order. */
  #refresh (): void {
    const view = new Map(this.#confirmed)
    const held = this.#held()
    for (const pending of this.#pending) {
      if (held.has(pending)) continue
      if (pending.kind === 'create') {
        if (pending.acked !== undefined) {
          // Taken: the server's task (from its answer until its event), never the placeholder too.
          if (!view.has(pending.acked.taskId) && pending.acked.task !== null) view.set(pending.acked.taskId, pending.acked.task)
          continue
        }
        view.set(pending.taskId, placeholder(this.teamId, pending, this.#client.userId))
      } else if (pending.kind === 'update') {
        const task = view.get(pending.taskId)
        if (task !== undefined) view.set(pending.taskId, { ...task, ...pending.patch })
      } else {
        view.delete(pending.taskId)
      }
    }
    this.#view = [...view.values()].sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id))
    this.emit('change', this.#view)
  }
}

/**
 * Sent again with the same key: no answer at all (status 0), 408, 429 and 5xx (the server took
 * nothing, or may have: the key makes a retry safe), and 401 (the client is getting a fresh
 * credential; if it cannot, it stops, and the mutation stays queued).
 */
function shouldRetry (error: AtlasApiError): boolean {
  return error.status === 0 || error.status === 401 || error.status === 408 || error.status === 429 || error.status >= 500
}

/** Refusals that depend on what others did meanwhile, for the user to decide; a delete's 404 is what it wanted. */
function isConflict (pending: Pending, error: AtlasApiError): boolean {
  return error.status === 412 || error.status === 403 || (error.status === 404 && pending.kind === 'update')
}

function placeholder (teamId: string, pending: Pending, userId: string | undefined): Task {
  const input = pending.input ?? { title: '' }
  return {
    id: pending.taskId,
    teamId,
    ...createdTaskFields(input),
    version: 0,
    createdAt: pending.createdAt,
    updatedAt: pending.createdAt,
    updatedBy: userId ?? ''
  }
}

function describeRefusal (error: AtlasApiError): string {
  switch (error.status) {
    case 0: return `the request did not reach the server (${error.message})`
    case 400: return `the server refused the change as invalid: ${error.message}`
    case 401: return 'the access token was refused'
    case 403: return 'you are not allowed to change this team\'s tasks'
    case 404: return 'the task no longer exists'
    case 409: return `the change conflicts with an earlier one: ${error.message}`
    case 412: return 'someone else changed the task first; showing their version'
    case 429: return `too many changes in a short time: ${error.message}`
    default: return `the server answered ${error.status}: ${error.message}`
  }
}
