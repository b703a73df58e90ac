import type { AtlasClient, Snapshot } from './client.js'
import { Emitter } from './emitter.js'
import { AtlasClientError } from './errors.js'
import { AtlasApiError, type MutationResponse } from './http.js'
import { newMutationId } from './ids.js'
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
    /** Why it was undone, in words fit for a person. */
    reason: string
    error: AtlasApiError
    /** The task as it stands after the rollback (for a 412: the server's current one). */
    task: Task | undefined
  }

export interface TaskStoreOptions {
  /** Send If-Match with the version this client had, so a stale edit is refused (default true). */
  ifMatch?: boolean
  /** Mutation id generator (default random UUIDs); injectable for tests. */
  newMutationId?: () => string
}

export interface TaskStoreEvents {
  /** The visible tasks changed (`tasks` is a new array). */
  change: Task[]
  /** A team event was applied; `previous` is the task before it (for activity feeds). */
  applied: { event: TaskEvent, previous: Task | undefined }
  confirmed: MutationOutcome & { ok: true }
  rolledBack: MutationOutcome & { ok: false }
  snapshot: Snapshot
  /**
   * The client dropped this team (`forbidden_team`): the user is not, or no longer, a member (its
   * membership was revoked, or a refreshed credential no longer lists it). No event comes any
   * more: `tasks` stays as it was last known (clear it from view), `ready` turns false, a `start()` waiting rejects,
   * mutations the server already took are confirmed from its answers and those still on their way
   * are rolled back by its 403. `start()` again follows the team if it is given back.
   */
  dropped: AtlasClientError
}

interface Pending {
  mutationId: string
  kind: MutationKind
  /** For a create, the temporary id the task shows under until the server's event. */
  taskId: string
  input?: TaskInput
  patch?: TaskPatch
  createdAt: string
  /** Set when the HTTP call succeeded: the server took the mutation. */
  acked?: { taskId: string, version: number | undefined, task: Task | null }
  /** Acked before a list fetch started, so that list reflects it. */
  covered?: boolean
  settle: (outcome: MutationOutcome) => void
}

const TEMP_PREFIX = 'local:'

/**
 * One team's tasks, kept current from the list endpoint and the team's events, with
 * local-first mutations: a change shows at once (as a pending layer over the server's state)
 * and is confirmed when the event carrying its mutation id arrives, or when the server's state
 * is found to already include it (a no-op, or an event that raced ahead). It is rolled back
 * when the server refuses it or the request fails; a 412 also brings in the server's task.
 */
export class TaskStore extends Emitter<TaskStoreEvents> {
  readonly teamId: string
  readonly #client: AtlasClient
  readonly #ifMatch: boolean
  readonly #newId: () => string
  /** The server's state as last heard. */
  readonly #confirmed = new Map<string, Task>()
  /** Mutations not yet confirmed nor rolled back, oldest first. */
  #pending: Pending[] = []
  /** Per task, the HTTP call in flight: calls on one task go one after the other. */
  readonly #queues = new Map<string, Promise<void>>()
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
      client.on('stopped', (error) => {
        this.#fail(error)
        this.#settleFromAnswers()
      })
    ]
  }

  /** Tasks as this client should show them: the server's, with pending mutations on top, oldest first. */
  get tasks (): Task[] { return this.#view }
  /** Whether the first list has arrived. */
  get ready (): boolean { return this.#ready }
  /** The last team seq applied. */
  get seq (): number { return this.#seq }
  /** Number of mutations waiting for confirmation. */
  get pendingCount (): number { return this.#pending.length }

  get (taskId: string): Task | undefined { return this.#view.find((task) => task.id === taskId) }

  /** Whether the task has a mutation waiting for confirmation (or is not created yet). */
  isPending (taskId: string): boolean {
    return this.#pending.some((p) => p.taskId === taskId || p.acked?.taskId === taskId)
  }

  /**
   * Follows the team through the client; resolves when its first list arrived. Rejects with an
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
   * Stops listening (the client keeps its subscription). A `start()` still waiting rejects
   * (`closed`); mutations the server already took are confirmed from its answers.
   */
  close (): void {
    if (this.#closed) return
    this.#closed = true
    for (const unlisten of this.#unlisten) unlisten()
    this.#fail(new AtlasClientError('closed', 'atlas store: closed'))
    this.#settleFromAnswers()
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

  async create (input: TaskInput): Promise<MutationOutcome> {
    const mutationId = this.#newId()
    const taskId = TEMP_PREFIX + mutationId
    return await this.#optimistic({ mutationId, kind: 'create', taskId, input }, async () =>
      await this.#client.api.create(this.teamId, input, { mutationId }))
  }

  async update (taskId: string, patch: TaskPatch, options: { ifMatch?: boolean } = {}): Promise<MutationOutcome> {
    this.#checkSaved(taskId)
    const mutationId = this.#newId()
    return await this.#optimistic({ mutationId, kind: 'update', taskId, patch }, async () =>
      await this.#client.api.update(this.teamId, taskId, patch, { mutationId, ifMatch: this.#baseVersion(taskId, options.ifMatch) }))
  }

  async remove (taskId: string, options: { ifMatch?: boolean } = {}): Promise<MutationOutcome> {
    this.#checkSaved(taskId)
    const mutationId = this.#newId()
    return await this.#optimistic({ mutationId, kind: 'delete', taskId }, async () =>
      await this.#client.api.delete(this.teamId, taskId, { mutationId, ifMatch: this.#baseVersion(taskId, options.ifMatch) }))
  }

  #checkSaved (taskId: string): void {
    // A task still being created has no server id to address yet.
    if (taskId.startsWith(TEMP_PREFIX)) throw new Error(`atlas store: task ${taskId} is not saved yet`)
  }

  /** The version this client had: the server's last word on the task, from events or our own calls. */
  #baseVersion (taskId: string, perCall: boolean | undefined): number | undefined {
    if (!(perCall ?? this.#ifMatch)) return undefined
    const known = Math.max(this.#confirmed.get(taskId)?.version ?? 0, this.#ackedVersion.get(taskId) ?? 0)
    return known === 0 ? undefined : known
  }

  async #optimistic (fields: Omit<Pending, 'settle' | 'createdAt'>, call: () => Promise<MutationResponse>): Promise<MutationOutcome> {
    let settle!: (outcome: MutationOutcome) => void
    const outcome = new Promise<MutationOutcome>((resolve) => { settle = resolve })
    const pending: Pending = { ...fields, createdAt: new Date().toISOString(), settle }
    this.#pending.push(pending)
    this.#refresh()
    // Calls on one task are chained so each one's If-Match is the version the previous one produced.
    const previous = this.#queues.get(fields.taskId) ?? Promise.resolve()
    const done = previous.then(async () => {
      try {
        const response = await call()
        const taskId = response.task?.id ?? fields.taskId
        const version = response.task?.version
        if (version !== undefined) this.#ackedVersion.set(taskId, Math.max(version, this.#ackedVersion.get(taskId) ?? 0))
        if (this.#pending.includes(pending)) {
          pending.acked = { taskId, version, task: response.task }
          if (this.#halted()) this.#settleFromAnswers()
          else this.#settleAcked()
        }
      } catch (err) {
        this.#rollBack(pending, err)
      }
    })
    this.#queues.set(fields.taskId, done)
    void done.finally(() => { if (this.#queues.get(fields.taskId) === done) this.#queues.delete(fields.taskId) })
    return await outcome
  }

  #onSnapshot (snapshot: Snapshot): void {
    this.#confirmed.clear()
    for (const task of snapshot.tasks) this.#confirmed.set(task.id, task)
    this.#seq = snapshot.seq
    // The list was read after these were acked, so it reflects them, whatever happened since.
    for (const pending of [...this.#pending]) {
      if (pending.covered === true) this.#confirm(pending)
    }
    this.#settleAcked()
    this.#refresh()
    this.emit('snapshot', snapshot)
    if (!this.#ready) {
      this.#ready = true
      for (const waiter of this.#readyWaiters.splice(0)) waiter.resolve()
    }
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
      if (mine !== undefined) this.#confirm(mine, event.taskId)
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
    pending.settle(outcome)
  }

  #rollBack (pending: Pending, err: unknown): void {
    const error = err instanceof AtlasApiError ? err : new AtlasApiError((err as Error)?.message ?? String(err), 0, 'CLIENT_ERROR')
    if (error.status === 412 && error.task !== undefined) {
      const known = this.#confirmed.get(error.task.id)
      if (known === undefined || known.version < error.task.version) this.#confirmed.set(error.task.id, error.task)
    } else if (error.status === 404 && pending.kind !== 'create') {
      // The server has no such task: whatever we still show of it is stale.
      this.#confirmed.delete(pending.taskId)
    }
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
    pending.settle(outcome)
  }

  #remove (pending: Pending): boolean {
    const index = this.#pending.indexOf(pending)
    if (index === -1) return false
    this.#pending.splice(index, 1)
    return true
  }

  /** Recomputes the visible tasks: the server's state with every pending mutation applied in order. */
  #refresh (): void {
    const view = new Map(this.#confirmed)
    for (const pending of this.#pending) {
      if (pending.kind === 'create') {
        // Once the server's task is here the placeholder would show it twice.
        if (pending.acked !== undefined && view.has(pending.acked.taskId)) continue
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
