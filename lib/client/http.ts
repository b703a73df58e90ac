import type { Task, TaskInput, TaskPatch } from './protocol.js'

export type TokenSource = string | (() => string | Promise<string>)

export interface TaskApiOptions {
  /** Origin (and prefix, if any) of the task routes, e.g. `https://atlas.example.com`. */
  baseUrl: string
  token: TokenSource
  /** fetch to use (default the global one: browsers, Node 18+). */
  fetch?: typeof fetch
}

/** A refused or failed HTTP call. `status` is 0 when no response arrived at all. */
export class AtlasApiError extends Error {
  constructor (
    message: string,
    readonly status: number,
    readonly code: string,
    /** With 412: the task as the server has it now, so the caller can rebase. */
    readonly task?: Task
  ) {
    super(message)
    this.name = 'AtlasApiError'
  }
}

export interface MutationOptions {
  /** Sent as Idempotency-Key; the resulting event carries it as `mutationId`. */
  mutationId?: string
  /** The task version the caller based its change on; a stale one gets 412. */
  ifMatch?: number
}

export interface MutationResponse {
  /** The task after the change (for a delete: null). */
  task: Task | null
  /** True when the server answered with the stored result of an earlier request with this id. */
  replayed: boolean
}

export async function resolveToken (source: TokenSource): Promise<string> {
  return typeof source === 'function' ? await source() : source
}

/** The task routes over fetch: one method per route, errors as AtlasApiError. */
export class TaskApi {
  readonly baseUrl: string
  readonly #token: TokenSource
  readonly #fetch: typeof fetch

  constructor (options: TaskApiOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '')
    this.#token = options.token
    const f = options.fetch ?? globalThis.fetch
    if (typeof f !== 'function') throw new Error('atlas client: no fetch here; pass the fetch option')
    // Called unbound: some fetch implementations insist on `this` being the global object.
    this.#fetch = (input, init) => f(input, init)
  }

  /** All tasks of a team and the event seq the list is current as of. */
  async list (teamId: string): Promise<{ tasks: Task[], seq: number }> {
    return await this.#call('GET', teamPath(teamId)) as { tasks: Task[], seq: number }
  }

  async get (teamId: string, taskId: string): Promise<Task> {
    return await this.#call('GET', taskPath(teamId, taskId)) as Task
  }

  async create (teamId: string, input: TaskInput, options: MutationOptions = {}): Promise<MutationResponse> {
    return await this.#mutate('POST', teamPath(teamId), input, options)
  }

  async update (teamId: string, taskId: string, patch: TaskPatch, options: MutationOptions = {}): Promise<MutationResponse> {
    return await this.#mutate('PATCH', taskPath(teamId, taskId), patch, options)
  }

  async delete (teamId: string, taskId: string, options: MutationOptions = {}): Promise<MutationResponse> {
    return await this.#mutate('DELETE', taskPath(teamId, taskId), undefined, options)
  }

  async #mutate (method: string, path: string, body: unknown, options: MutationOptions): Promise<MutationResponse> {
    const headers: Record<string, string> = {}
    if (options.mutationId !== undefined) headers['idempotency-key'] = options.mutationId
    if (options.ifMatch !== undefined) headers['if-match'] = `"${options.ifMatch}"`
    let replayed = false
    const task = await this.#call(method, path, body, headers, (response) => { replayed = response.headers.get('idempotency-replayed') === 'true' })
    return { task: (task ?? null) as Task | null, replayed }
  }

  async #call (method: string, path: string, body?: unknown, extraHeaders: Record<string, string> = {}, onResponse?: (r: Response) => void): Promise<unknown> {
    const headers: Record<string, string> = { ...extraHeaders, authorization: `Bearer ${await resolveToken(this.#token)}` }
    if (body !== undefined) headers['content-type'] = 'application/json'
    let response: Response
    try {
      response = await this.#fetch(this.baseUrl + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
    } catch (err) {
      throw new AtlasApiError(`${method} ${path} failed: ${(err as Error)?.message ?? String(err)}`, 0, 'NETWORK_ERROR')
    }
    onResponse?.(response)
    const text = await response.text().catch(() => '')
    let parsed: unknown
    try { parsed = text === '' ? undefined : JSON.parse(text) } catch { parsed = undefined }
    if (response.ok) return parsed
    const error = (parsed ?? {}) as { code?: unknown, message?: unknown, task?: Task }
    throw new AtlasApiError(
      typeof error.message === 'string' ? error.message : `${method} ${path} answered ${response.status}`,
      response.status,
      typeof error.code === 'string' ? error.code : `HTTP_${response.status}`,
      error.task
    )
  }
}

function teamPath (teamId: string): string {
  return `/teams/${encodeURIComponent(teamId)}/tasks`
}

function taskPath (teamId: string, taskId: string): string {
  return `${teamPath(teamId)}/${encodeURIComponent(taskId)}`
}
