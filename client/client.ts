import { Backoff, type BackoffOptions } from './backoff.js'
import { RealtimeConnection, type ConnectionState, type DisconnectInfo, type HeartbeatOptions, type ReconnectInfo } from './connection.js'
import { Emitter } from './emitter.js'
import { AtlasApiError, TaskApi, resolveToken, type TokenSource } from './http.js'
import type { ResyncReason } from '../protocol/constants.js'
import type { ServerFrame, Task, TaskEvent } from '../protocol/schemas.js'
import { isTaskEvent } from './frames.js'
import type { WebSocketConstructor } from './socket.js'

export interface AtlasClientOptions {
  /** Origin (and prefix) of the HTTP API. Default in a browser: the page's origin. */
  baseUrl?: string
  /** The WebSocket endpoint. Default: `baseUrl` with ws(s):// and `/realtime` appended. */
  realtimeUrl?: string
  /** An access token, or a function returning a fresh one (asked before every connect and request). */
  token: TokenSource
  /** Teams to follow from the start (more with `subscribe`). */
  teams?: string[]
  /** WebSocket class (default: the global one, else the `ws` package, loaded lazily). */
  WebSocket?: WebSocketConstructor
  fetch?: typeof fetch
  /** Reconnect backoff; `random` is injectable for tests. */
  reconnect?: BackoffOptions
  heartbeat?: HeartbeatOptions
  connectTimeoutMs?: number
}

/** Why a team's state was (re)loaded from the list endpoint. */
export type SnapshotReason = 'initial' | 'gap' | 'requested' | ResyncReason

export interface Snapshot {
  teamId: string
  tasks: Task[]
  /** The seq the list is current as of; only events after it are delivered next. */
  seq: number
  reason: SnapshotReason
}

export interface AtlasClientEvents {
  state: ConnectionState
  welcome: { userId: string, teams: string[] }
  subscribed: { teamId: string, seq: number, replayed: number }
  /** A team's event, exactly once and in seq order. */
  event: TaskEvent
  /** A team's list is being (re)fetched; events are held until it arrives. */
  resyncing: { teamId: string, reason: SnapshotReason }
  snapshot: Snapshot
  disconnect: DisconnectInfo
  reconnect: ReconnectInfo
  /** An error frame from the server, a refused team, or a failed list fetch (retried). */
  error: { code: string, message: string, teamId?: string }
}

interface TeamState {
  /** Last seq applied; undefined until the first list arrived. */
  seq: number | undefined
  syncing: boolean
  /** Bumped per sync; an older sync's answer is dropped. */
  syncGeneration: number
  /** Events that arrived while syncing, applied after the list if newer than it. */
  held: TaskEvent[]
}

/**
 * A realtime client for one principal: follows teams over one resilient connection and
 * delivers each team's events exactly once, in order, with no hole. On reconnect it resumes
 * each team from the last seq it applied; it drops duplicates (seq <= last); when the server
 * says `resync` (or a gap shows) it refetches the team's list and continues after the list's seq.
 */
export class AtlasClient extends Emitter<AtlasClientEvents> {
  readonly api: TaskApi
  readonly #connection: RealtimeConnection
  readonly #teams = new Map<string, TeamState>()
  readonly #realtimeUrl: string
  readonly #token: TokenSource
  readonly #syncBackoff: BackoffOptions
  /** Teams the principal belongs to, from the last welcome; undefined before the first. */
  #allowed: Set<string> | undefined
  /** Teams whose subscription rides on the current socket's URL. */
  #inUrl = new Set<string>()
  #userId: string | undefined
  /** False after `close()`: list fetches in progress stop retrying. */
  #active = false

  constructor (options: AtlasClientOptions) {
    super()
    const baseUrl = options.baseUrl ?? (globalThis as { location?: { origin: string } }).location?.origin
    if (baseUrl === undefined) throw new Error('atlas client: baseUrl is required outside a browser')
    this.#token = options.token
    this.api = new TaskApi({ baseUrl, token: options.token, fetch: options.fetch })
    this.#realtimeUrl = options.realtimeUrl ?? `${this.api.baseUrl.replace(/^http/, 'ws')}/realtime`
    this.#syncBackoff = { ...options.reconnect, maxAttempts: undefined }
    for (const teamId of options.teams ?? []) this.#track(teamId)
    this.#connection = new RealtimeConnection({
      url: async () => await this.#url(),
      WebSocket: options.WebSocket,
      reconnect: options.reconnect,
      heartbeat: options.heartbeat,
      connectTimeoutMs: options.connectTimeoutMs
    })
    this.#connection.on('frame', (frame) => { this.#onFrame(frame) })
    this.#connection.on('state', (state) => { this.emit('state', state) })
    this.#connection.on('disconnect', (info) => { this.emit('disconnect', info) })
    this.#connection.on('reconnect', (info) => { this.emit('reconnect', info) })
  }

  get state (): ConnectionState { return this.#connection.state }
  /** The user id the server greeted us as (after the first `welcome`). */
  get userId (): string | undefined { return this.#userId }
  /** The principal's teams (after the first `welcome`). */
  get allowedTeams (): string[] | undefined { return this.#allowed === undefined ? undefined : [...this.#allowed] }
  /** Teams followed. */
  get teams (): string[] { return [...this.#teams.keys()] }

  /** Last seq applied for a team (undefined before its first list). */
  lastSeq (teamId: string): number | undefined { return this.#teams.get(teamId)?.seq }

  connect (): this {
    this.#active = true
    // Loads that `close()` interrupted start over, or their held events would wait forever.
    for (const [teamId, team] of this.#teams) {
      if (team.syncing) this.#sync(teamId, 'requested')
    }
    this.#connection.connect()
    return this
  }

  close (): void {
    this.#active = false
    this.#connection.close()
  }

  /** Follows a team. Its list is fetched first (a `snapshot`), then its events follow. */
  subscribe (teamId: string): void {
    if (this.#teams.has(teamId)) return
    if (this.#allowed !== undefined && !this.#allowed.has(teamId)) {
      this.emit('error', { code: 'forbidden_team', message: `Not a member of team ${teamId}`, teamId })
      return
    }
    this.#track(teamId)
    if (this.#connection.state === 'open') this.#connection.send({ type: 'subscribe', teams: [teamId] })
  }

  unsubscribe (teamId: string): void {
    if (!this.#teams.delete(teamId)) return
    this.#connection.send({ type: 'unsubscribe', teams: [teamId] })
  }

  /** Refetches a team's list now (a `snapshot` follows); events keep their order around it. */
  resync (teamId: string): void {
    if (this.#teams.has(teamId)) this.#sync(teamId, 'requested')
  }

  #track (teamId: string): void {
    this.#teams.set(teamId, { seq: undefined, syncing: false, syncGeneration: 0, held: [] })
  }

  /**
   * The URL of the next attempt. Teams the server is known to allow go in `teams=` with their
   * resume position in `since=`; others are subscribed by frame after `welcome`, so a team the
   * principal lost can never make every upgrade fail with 403.
   */
  async #url (): Promise<string> {
    const token = await resolveToken(this.#token)
    this.#inUrl = new Set([...this.#teams.keys()].filter((teamId) => this.#allowed?.has(teamId) === true))
    const since = [...this.#inUrl].flatMap((teamId) => {
      const seq = this.#teams.get(teamId)?.seq
      return seq === undefined ? [] : [`${teamId}:${seq}`]
    })
    const params = new URLSearchParams({ access_token: token, teams: [...this.#inUrl].join(',') })
    if (since.length > 0) params.set('since', since.join(','))
    return `${this.#realtimeUrl}?${params.toString()}`
  }

  #onFrame (frame: ServerFrame): void {
    if (isTaskEvent(frame)) {
      this.#onEvent(frame)
      return
    }
    switch (frame.type) {
      case 'welcome': this.#onWelcome(frame.userId, frame.teams); break
      case 'subscribed': {
        const team = this.#teams.get(frame.teamId)
        if (team === undefined) break
        this.emit('subscribed', { teamId: frame.teamId, seq: frame.seq, replayed: frame.replayed })
        // Subscribed without a position: load the list; events from here on are held meanwhile.
        // (A load still running from an earlier socket is superseded by this one.)
        if (team.seq === undefined) this.#sync(frame.teamId, 'initial')
        break
      }
      case 'resync':
        if (this.#teams.has(frame.teamId)) this.#sync(frame.teamId, frame.reason)
        break
      case 'error':
        this.emit('error', { code: frame.code, message: frame.message })
        break
    }
  }

  #onWelcome (userId: string, teams: string[]): void {
    this.#userId = userId
    this.#allowed = new Set(teams)
    this.emit('welcome', { userId, teams: [...teams] })
    const teamsByFrame: string[] = []
    // Pairs, made into an object at the end: a team id is any string of the id alphabet, and
    // `since[teamId] = …` with `__proto__` would set the object's prototype instead of a key.
    const since: Array<[string, number]> = []
    for (const [teamId, team] of this.#teams) {
      if (this.#inUrl.has(teamId)) continue
      if (!this.#allowed.has(teamId)) {
        this.#teams.delete(teamId)
        this.emit('error', { code: 'forbidden_team', message: `Not a member of team ${teamId}`, teamId })
        continue
      }
      teamsByFrame.push(teamId)
      if (team.seq !== undefined) since.push([teamId, team.seq])
    }
    if (teamsByFrame.length > 0) {
      // Object.fromEntries defines own properties, `__proto__` included.
      this.#connection.send(since.length > 0 ? { type: 'subscribe', teams: teamsByFrame, since: Object.fromEntries(since) } : { type: 'subscribe', teams: teamsByFrame })
    }
  }

  #onEvent (event: TaskEvent): void {
    const team = this.#teams.get(event.teamId)
    if (team === undefined) return
    if (team.syncing || team.seq === undefined) {
      team.held.push(event)
      return
    }
    this.#apply(event.teamId, team, event)
  }

  #apply (teamId: string, team: TeamState, event: TaskEvent): void {
    const last = team.seq ?? 0
    // Already applied: a replay overlapping what we had, or a relayed duplicate.
    if (event.seq <= last) return
    if (event.seq > last + 1) {
      // A hole (frames lost on the way): never guess, reload the list.
      team.held.push(event)
      this.#sync(teamId, 'gap')
      return
    }
    team.seq = event.seq
    this.emit('event', event)
  }

  /** Fetches the team's list, then applies the held events that are newer than it. */
  #sync (teamId: string, reason: SnapshotReason): void {
    const team = this.#teams.get(teamId)
    if (team === undefined) return
    const generation = ++team.syncGeneration
    team.syncing = true
    const backoff = new Backoff(this.#syncBackoff)
    const run = async (): Promise<void> => {
      this.emit('resyncing', { teamId, reason })
      for (;;) {
        try {
          const list = await this.api.list(teamId)
          if (this.#teams.get(teamId) !== team || team.syncGeneration !== generation) return
          team.seq = list.seq
          team.syncing = false
          this.emit('snapshot', { teamId, tasks: list.tasks, seq: list.seq, reason })
          const held = team.held.sort((a, b) => a.seq - b.seq)
          team.held = []
          for (const event of held) {
            if (team.syncing) team.held.push(event)
            else this.#apply(teamId, team, event)
          }
          return
        } catch (err) {
          if (this.#teams.get(teamId) !== team || team.syncGeneration !== generation) return
          const status = err instanceof AtlasApiError ? err.status : 0
          this.emit('error', { code: 'resync_failed', message: `Loading team ${teamId} failed: ${(err as Error).message}`, teamId })
          // Lost membership: retrying cannot help. (A 401 can: the token source may refresh.)
          if (status === 403) {
            this.#teams.delete(teamId)
            return
          }
          await new Promise((resolve) => setTimeout(resolve, backoff.next()))
          if (!this.#active) return
        }
      }
    }
    void run()
  }
}
