import type { Task, TaskInput, TaskPatch } from '../protocol/schemas.js'
import { Credential, type CredentialOptions } from './credentials.js'

export interface TaskApiOptions extends CredentialOptions {
  /**
   * Origin (and prefix, if any) of the task routes, e.g. `https://atlas.example.com/api`; or a
   * function asked before each request (AtlasClient passes one that follows its fail-over).
   */
  baseUrl: string | (() => string)
  /**
   * fetch to use (default the global one: browsers, Node 18+). Cookies: the default
   * `credentials: 'same-origin'` sends them to the page's own origin; for a cross-origin API
   * with cookie sessions pass `(url, init) => fetch(url, { ...init, credentials: 'include' })`.
   */
  fetch?: typeof fetch
  /** Called with every 401 answer (after which the call throws it). */
  onUnauthorized?: (error: AtlasApiError) => void
}

/** A refused or failed HTTP call. `status` is 0 when no response arrived at all. */
export class AtlasApiError extends Error {
  constructor (
    message: string,
    readonly status: number,
    readonly code: string,
    /** With 412: the task as the server has it now, so the caller can rebase. */
    readonly task?: Task,
    /** With 429 and 503: the server's Retry-After, in ms. */
    readonly retryAfterMs?: number
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

export interface TaskPage {
  tasks: Task[]
  /** The team's event seq this page is current as of. */
  seq: number
  /** Pass as `cursor` for the next page; null on the last page. */
  nextCursor: string | null
}

export interface MutationResponse {
  /** The task after the change (for a delete: null). */
  task: Task | null
  /** True when the server answered with the stored result of an earlier request with this id. */
  replayed: boolean
}

/** The credential a 401 answered, kept off the error object so that logging the error never shows it. */
const refused = new WeakMap<AtlasApiError, string | undefined>()

/** The credential (undefined: none) that the call which threw this 401 sent. */
export function refusedCredentialOf (error: AtlasApiError): string | undefined {
  return refused.get(error)
}

/**
 * The task routes over fetch: one method per route, errors as AtlasApiError. The credential
 * goes in `Authorization: Bearer …` when there is one; with none, no Authorization header is
 * sent at all (cookie sessions).
 */
export class TaskApi {
  readonly #baseUrl: () => string
  readonly #credential: Credential
  readonly #fetch: typeof fetch
  readonly #onUnauthorized: ((error: AtlasApiError) => void) | undefined

  constructor (options: TaskApiOptions) {
    const { baseUrl } = options
    if (typeof baseUrl === 'function') {
      this.#baseUrl = () => trimBase(baseUrl())
    } else {
      const fixed = trimBase(baseUrl)
      this.#baseUrl = () => fixed
    }
    this.#credential = new Credential(options, 'atlas TaskApi')
    this.#onUnauthorized = options.onUnauthorized
    const f = options.fetch ?? globalThis.fetch
    if (typeof f !== 'function') throw new Error('atlas client: no fetch here; pass the fetch option')
    // Called unbound: some fetch implementations insist on `this` being the global object.
    this.#fetch = (input, init) => f(input, init)
  }

  /** The base URL the next request goes to. */
  get baseUrl (): string { return this.#baseUrl() }

  /**
   * All tasks of a team, page after page, and the seq of the FIRST page. Later pages are read
   * at later seqs, but events carry whole tasks: applying the team's events after that first
   * seq, in order, brings the whole list to the present (docs/protocol.md, "Resync procedure").
   */
  async list (teamId: string): Promise<{ tasks: Task[], seq: number }> {
    const first = await this.listPage(teamId)
    // A Map, in page order: a task is never on two pages, and if it were, the later read wins.
    const tasks = new Map(first.tasks.map((task) => [task.id, task]))
    let cursor = first.nextCursor
    while (cursor !== null) {
      const page = await this.listPage(teamId, { cursor })
      for (const task of page.tasks) tasks.set(task.id, task)
      cursor = page.nextCursor
    }
    return { tasks: [...tasks.values()], seq: first.seq }
  }

  /** One page of a team's tasks (the server's default size unless `limit`); `nextCursor` is null on the last. */
  async listPage (teamId: string, options: { limit?: number, cursor?: string } = {}): Promise<TaskPage> {
    const query = new URLSearchParams()
    if (options.limit !== undefined) query.set('limit', String(options.limit))
    if (options.cursor !== undefined) query.set('cursor', options.cursor)
    const search = query.toString()
    const page = await this.#call('GET', search === '' ? teamPath(teamId) : `${teamPath(teamId)}?${search}`) as TaskPage
    // A server from before pagination answers the whole list without nextCursor.
    return { tasks: page.tasks, seq: page.seq, nextCursor: page.nextCursor ?? null }
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
    const headers: Record<string, string> = { ...extraHeaders }
    const token = await this.#credential.current()
    if (token !== undefined) headers.authorization = `Bearer ${token}`
    if (body !== undefined) headers['content-type'] = 'application/json'
    let response: Response
    try {
      response = await this.#fetch(this.#baseUrl() + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
    } catch (err) {
      throw new AtlasApiError(`${method} ${path} failed: ${(err as Error)?.message ?? String(err)}`, 0, 'NETWORK_ERROR')
    }
    onResponse?.(response)
    const text = await response.text().catch(() => '')
    let parsed: unknown
    try { parsed = text === '' ? undefined : JSON.parse(text) } catch { parsed = undefined }
    if (response.ok) return parsed
    const answer = (parsed ?? {}) as { code?: unknown, message?: unknown, task?: Task }
    const error = new AtlasApiError(
      typeof answer.message === 'string' ? answer.message : `${method} ${path} answered ${response.status}`,
      response.status,
      typeof answer.code === 'string' ? answer.code : `HTTP_${response.status}`,
      answer.task,
      retryAfterMs(response.headers.get('retry-after'))
    )
    if (response.status === 401) {
      refused.set(error, token)
      this.#onUnauthorized?.(error)
    }
    throw error
  }
}

/** Retry-After in seconds (the only form the server sends); undefined when absent or not a number. */
function retryAfterMs (header: string | null): number | undefined {
  if (header === null || !/^\d+$/.test(header.trim())) return undefined
  return Number(header.trim()) * 1000
}

function trimBase (url: string): string {
  return url.replace(/\/+$/, '')
}

function teamPath (teamId: string): string {
  return `/teams/${encodeURIComponent(teamId)}/tasks`
}

function taskPath (teamId: string, taskId: string): string {
  return `${teamPath(teamId)}/${encodeURIComponent(taskId)}`
}
