import { Backoff, type BackoffOptions } from './backoff.js'
import { RealtimeConnection, type CloseVerdict, type ConnectionState, type DisconnectInfo, type HeartbeatOptions, type ReconnectInfo } from './connection.js'
import { Emitter } from './emitter.js'
import { AtlasApiError, TaskApi, refusedCredentialOf } from './http.js'
import { Credential, refreshDelay, type CredentialOptions } from './credentials.js'
import { AtlasClientError } from './errors.js'
import { CloseCode, ErrorCode, type ResyncReason } from '../protocol/constants.js'
import type { ServerFrame, Task, TaskEvent, WelcomeFrame } from '../protocol/schemas.js'
import { isTaskEvent } from './frames.js'
import type { WebSocketConstructor } from './socket.js'

/**
 * Credentials: `token` (a fixed bearer token), or `getToken` (asked before every connect and
 * request, again when the server refused one, and ahead of the credential's expiry to refresh
 * it on the open socket), or neither (nothing is sent: the server authenticates the request by
 * a cookie or the like). The credential travels in an Authorization header where the WebSocket
 * class can set one (the `ws` package in Node), else (browsers) as a `Sec-WebSocket-Protocol`
 * entry; never in a URL.
 */
export interface AtlasClientOptions extends CredentialOptions {
  /**
   * The HTTP base of the API, prefix included (`https://atlas.example.com/api`); the socket is
   * its `/realtime` with ws(s)://. A list: instances to fail over between, in order; every
   * failed attempt and every dropped connection moves on to the next one. HTTP calls go to the
   * instance the connection is on or, while it is away, the one it tries next.
   * Default in a browser: the page's origin.
   */
  baseUrl?: string | string[]
  /** The WebSocket endpoint when it is not `baseUrl` + `/realtime` (only with a single `baseUrl`). */
  realtimeUrl?: string
  /** Teams to follow from the start (more with `subscribe`). */
  teams?: string[]
  /**
   * WebSocket class. Default: in Node the `ws` package (loaded lazily), else the global one.
   * See `WebSocketConstructor.supportsHeaders` for how the credential is sent with yours.
   */
  WebSocket?: WebSocketConstructor
  /** fetch to use for the HTTP calls (see `TaskApiOptions.fetch` for cookies across origins). */
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
  /** A socket was accepted; `expiresAt` (epoch ms): when its credential expires, if the server said. */
  welcome: { userId: string, teams: string[], expiresAt?: number }
  /**
   * The server took a fresh credential on the open socket (see `refresh()`): the principal's
   * teams now (`added` may be subscribed from now on; followed teams in `removed` were dropped,
   * each with a `forbidden_team` error), and when the new credential expires.
   */
  refreshed: { teams: string[], added: string[], removed: string[], expiresAt?: number }
  subscribed: { teamId: string, seq: number, replayed: number }
  /** A team's event, exactly once and in seq order. */
  event: TaskEvent
  /** A team's list is being (re)fetched (once the socket has the team); events are held until it arrives. */
  resyncing: { teamId: string, reason: SnapshotReason }
  snapshot: Snapshot
  disconnect: DisconnectInfo
  reconnect: ReconnectInfo
  /**
   * An error frame from the server; `forbidden_team` (a team dropped, `teamId` says which: not,
   * or no longer, the user's, its membership revoked included, or a `subscribe` refused); `unauthorized` (the credential was refused: a
   * fresh one is asked of `getToken`, else the client stops); `revoked` (the host revoked the
   * user, close code 4004: a different token is asked of `getToken`, else the client stops);
   * `resync_failed` (a list fetch failed; retried).
   */
  error: { code: string, message: string, teamId?: string }
  /**
   * The client stopped for good (until `connect()`): `unauthorized`, `revoked`,
   * `retries_exhausted` or `closed`. Promises waiting on the connection are rejected with this error.
   */
  stopped: AtlasClientError
}

/** A `refresh()` under way on the current socket. */
interface RefreshAttempt {
  /** The token sent, once getToken gave one. */
  token: string | undefined
  done: Promise<boolean>
  settle: (refreshed: boolean) => void
}

/** The reason of the 4001 that answers a refused `refresh` frame (docs/protocol.md, "refresh"). */
const REFRESH_REFUSED = 'unauthorized: refresh refused'

interface Target {
  /** HTTP base, no trailing slash. */
  http: string
  /** The socket's URL, without query. */
  ws: string
}

interface TeamState {
  /** Last seq applied; undefined until the first list arrived. */
  seq: number | undefined
  syncing: boolean
  /** Bumped per sync; an older sync's answer is dropped. */
  syncGeneration: number
  /** Events that arrived while syncing, applied after the list if newer than it. */
  held: TaskEvent[]
  /**
   * The current socket delivered the team's `subscribed` or `resync`: its list may be fetched
   * now. Before that a list could be older than the point the subscription starts from, and the
   * events in between would be lost (docs/protocol.md, "Resync procedure"). False again for
   * every new socket.
   */
  live: boolean
  /** Why the load under way, or waiting for `live`, was asked for. */
  reason: SnapshotReason
  /** The socket (`AtlasClient.#socketCount`) the last load started on. */
  loadedOn: number
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
  readonly #targets: Target[]
  /** Index in #targets of the instance in use, or tried next. */
  #current = 0
  readonly #credential: Credential
  /** The credential the current socket carries: the one it was opened with, then each one the server took by `refreshed`. */
  #attemptToken: string | undefined
  /** A credential fetched after a refusal, for the next attempt (so getToken is not asked twice). */
  #fresh: { token: string | undefined } | undefined
  /** Why the connection is being stopped, decided just before it says so. */
  #stopping: AtlasClientError | undefined
  #stoppedBy: AtlasClientError | undefined
  /** An HTTP 401 being handled: further ones meanwhile are the same news. */
  #httpRefusal: Promise<void> | undefined
  readonly #syncBackoff: BackoffOptions
  /** Teams the principal belongs to, from the last welcome or refreshed less those revoked since; undefined before the first. */
  #allowed: Set<string> | undefined
  /** The teams the last welcome or refreshed listed, as they were (what a `refreshed` event's `added` and `removed` compare with). */
  #granted: string[] = []
  /** Counts sockets (bumped whenever one ends or starts): which one a list load started on. */
  #socketCount = 0
  /** Teams whose subscription rides on the current socket's URL. */
  #inUrl = new Set<string>()
  #userId: string | undefined
  /** False after `close()`: list fetches in progress stop retrying. */
  #active = false
  /** When the current socket's credential expires (epoch ms, as the server said); undefined: not said, or no socket. */
  #expiresAt: number | undefined
  /** The refresh ahead of `#expiresAt`. */
  #refreshTimer: ReturnType<typeof setTimeout> | undefined
  #refreshing: RefreshAttempt | undefined
  /**
   * Refreshing ahead of expiry is off on this socket: getToken gave the socket's own token, or
   * the server cannot refresh. At the expiry the server closes with 4001 and the client
   * reconnects with a fresh token, as it would without refreshes.
   */
  #refreshOff = false
  /** The token of the last `refresh` frame sent on this socket. */
  #refreshSent: string | undefined

  constructor (options: AtlasClientOptions) {
    super()
    this.#credential = new Credential(options, 'atlas client')
    this.#targets = targetsOf(options)
    this.api = new TaskApi({
      baseUrl: () => this.#targets[this.#current].http,
      getToken: async () => await this.#credential.current(),
      fetch: options.fetch,
      onUnauthorized: (error) => { this.#onHttpUnauthorized(error) }
    })
    this.#syncBackoff = { ...options.reconnect, maxAttempts: undefined }
    for (const teamId of options.teams ?? []) this.#track(teamId)
    this.#connection = new RealtimeConnection({
      url: () => this.#url(),
      token: async () => await this.#tokenForAttempt(),
      onClose: (info) => this.#onSocketClosed(info.code, info.reason),
      WebSocket: options.WebSocket,
      reconnect: options.reconnect,
      heartbeat: options.heartbeat,
      connectTimeoutMs: options.connectTimeoutMs
    })
    this.#connection.on('frame', (frame) => { this.#onFrame(frame) })
    this.#connection.on('state', (state) => {
      if (state !== 'open') this.#offline()
      this.emit('state', state)
    })
    this.#connection.on('disconnect', (info) => {
      this.#abandonRefresh()
      this.emit('disconnect', info)
      if (info.willReconnect || !this.#active) return
      const why = this.#stopping ?? new AtlasClientError('retries_exhausted',
        `atlas client: gave up after ${options.reconnect?.maxAttempts ?? 0} reconnect attempts (last close ${info.code}${info.reason === '' ? '' : `: ${info.reason}`})`)
      this.#finish(why)
    })
    this.#connection.on('reconnect', (info) => { this.emit('reconnect', info) })
  }

  get state (): ConnectionState { return this.#connection.state }
  /** The user id the server greeted us as (after the first `welcome`). */
  get userId (): string | undefined { return this.#userId }
  /** The principal's teams (after the first `welcome`). */
  get allowedTeams (): string[] | undefined { return this.#allowed === undefined ? undefined : [...this.#allowed] }
  /** Teams followed. */
  get teams (): string[] { return [...this.#teams.keys()] }
  /** Why the client stopped (`close()`, a refused credential, exhausted retries); undefined while it runs or before it first did. */
  get stoppedBy (): AtlasClientError | undefined { return this.#stoppedBy }
  /** The HTTP base in use: the instance the connection is on, or the one it tries next. */
  get baseUrl (): string { return this.#targets[this.#current].http }

  /** Last seq applied for a team (undefined before its first list). */
  lastSeq (teamId: string): number | undefined { return this.#teams.get(teamId)?.seq }

  connect (): this {
    this.#active = true
    this.#stoppedBy = undefined
    this.#stopping = undefined
    // Loads that `close()` interrupted start over (once the new socket has the team), or their
    // held events would wait forever.
    for (const [teamId, team] of this.#teams) {
      if (team.syncing) this.#sync(teamId, 'requested')
    }
    this.#connection.connect()
    return this
  }

  close (): void {
    const already = this.#stoppedBy !== undefined
    this.#abandonRefresh()
    this.#active = false
    this.#stoppedBy = new AtlasClientError('closed', 'atlas client: closed')
    if (!already) this.emit('stopped', this.#stoppedBy)
    this.#connection.close()
  }

  /** Follows a team. Its list is fetched first (a `snapshot`), then its events follow. */
  subscribe (teamId: string): void {
    if (this.#teams.has(teamId)) return
    if (this.#allowed !== undefined && !this.#allowed.has(teamId)) {
      this.#forbidden(teamId)
      return
    }
    this.#track(teamId)
    if (this.#connection.state === 'open') this.#connection.send({ type: 'subscribe', teams: [teamId] })
  }

  unsubscribe (teamId: string): void {
    if (!this.#teams.delete(teamId)) return
    this.#connection.send({ type: 'unsubscribe', teams: [teamId] })
  }

  /**
   * Refreshes the open socket's credential now, without reconnecting: asks `getToken` for a token
   * and sends it in a `refresh` frame. The client does this by itself ahead of the credential's
   * expiry; call it when you know the principal changed (say, the user joined a team, and a new
   * token lists it). Resolves true once the server took it (after the `refreshed` event), false
   * when nothing was refreshed: not open, no `getToken`, it returned the socket's own token,
   * the server cannot refresh (`refresh_unsupported`) or not now (`rate_limited`), or the socket
   * closed meanwhile (a refused token closes it with 4001: see the `unauthorized` error). A
   * call while one is under way shares its outcome.
   */
  async refresh (): Promise<boolean> {
    if (this.#refreshing !== undefined) return await this.#refreshing.done
    if (this.#connection.state !== 'open' || !this.#credential.renewable) return false
    clearTimeout(this.#refreshTimer)
    this.#refreshTimer = undefined
    let settle!: (refreshed: boolean) => void
    const done = new Promise<boolean>((resolve) => { settle = resolve })
    const attempt: RefreshAttempt = { token: undefined, done, settle }
    this.#refreshing = attempt
    void this.#sendRefresh(attempt)
    return await done
  }

  async #sendRefresh (attempt: RefreshAttempt): Promise<void> {
    let token: string | undefined
    try {
      token = await this.#credential.current()
    } catch {
      // getToken failed this time: asked again later, by the same rule from the time left then.
      this.#refreshFailed(attempt)
      return
    }
    // The socket went away meanwhile: its successor is welcomed with whatever token it was opened with.
    if (this.#refreshing !== attempt) return
    if (token === undefined || token === this.#attemptToken) {
      // Nothing new to send. The socket keeps its credential; at its expiry the server closes it
      // with 4001 and the reconnect asks getToken again.
      this.#refreshOff = true
      this.#refreshFailed(attempt)
      return
    }
    attempt.token = token
    this.#refreshSent = token
    if (!this.#connection.send({ type: 'refresh', token })) this.#refreshFailed(attempt)
  }

  /** Ends a refresh under way; false when it had ended already (abandoned with its socket). */
  #endRefresh (attempt: RefreshAttempt, refreshed: boolean): boolean {
    if (this.#refreshing !== attempt) return false
    this.#refreshing = undefined
    attempt.settle(refreshed)
    return true
  }

  /** A refresh that did not happen: the next one is scheduled from the expiry still in force (unless refreshes are off). */
  #refreshFailed (attempt: RefreshAttempt): void {
    if (this.#endRefresh(attempt, false)) this.#scheduleRefresh(this.#expiresAt)
  }

  /**
   * Plans the refresh of a credential expiring at `expiresAt` (rule: `refreshDelay`). Only with
   * `getToken`: a fixed token cannot be replaced, and no credential (a cookie) has nothing to send.
   */
  #scheduleRefresh (expiresAt: number | undefined): void {
    clearTimeout(this.#refreshTimer)
    this.#refreshTimer = undefined
    this.#expiresAt = expiresAt
    if (expiresAt === undefined || this.#refreshOff || !this.#credential.renewable || this.#connection.state !== 'open') return
    const delayMs = refreshDelay(expiresAt - Date.now())
    if (delayMs === undefined) return
    this.#refreshTimer = setTimeout(() => {
      this.#refreshTimer = undefined
      void this.refresh()
    }, delayMs)
  }

  /** The socket went away (or the client closed): no refresh is planned, one under way is given up. */
  #abandonRefresh (): void {
    clearTimeout(this.#refreshTimer)
    this.#refreshTimer = undefined
    this.#expiresAt = undefined
    const attempt = this.#refreshing
    if (attempt !== undefined) this.#endRefresh(attempt, false)
  }

  #onRefreshed (teams: string[], expiresAt: number | undefined): void {
    const attempt = this.#refreshing
    // The new credential is the socket's now: the one a refused reconnect would be compared with.
    // (An answer that came after the refresh was given up on is the last one sent.)
    this.#attemptToken = attempt?.token ?? this.#refreshSent ?? this.#attemptToken
    const before = new Set(this.#granted)
    this.#granted = [...teams]
    this.#allowed = new Set(teams)
    const added = teams.filter((teamId) => !before.has(teamId))
    const removed = [...before].filter((teamId) => !this.#allowed?.has(teamId))
    // The server ended the subscriptions of lost teams already (`unsubscribed` revoked); a
    // followed team whose subscribe frame was still on its way is dropped here.
    for (const teamId of [...this.#teams.keys()]) {
      if (!this.#allowed.has(teamId)) this.#forbidden(teamId, `Team ${teamId} is no longer among the user's teams`)
    }
    this.#scheduleRefresh(expiresAt)
    this.emit('refreshed', { teams: [...teams], added, removed, ...(expiresAt === undefined ? {} : { expiresAt }) })
    if (attempt !== undefined) this.#endRefresh(attempt, true)
  }

  /** An error frame may be the answer to the refresh under way. */
  #onErrorFrame (code: string): void {
    const attempt = this.#refreshing
    if (attempt?.token === undefined) return
    switch (code) {
      case ErrorCode.REFRESH_UNSUPPORTED:
      // A server from before refresh frames does not know the type.
      case ErrorCode.UNKNOWN_TYPE:
      case ErrorCode.INVALID_FRAME:
        // The socket keeps its credential; at its expiry the client reconnects with a fresh one.
        this.#refreshOff = true
        this.#refreshFailed(attempt)
        break
      case ErrorCode.RATE_LIMITED:
        this.#refreshFailed(attempt)
        break
    }
  }

  /**
   * Refetches a team's list (a `snapshot` follows); events keep their order around it. The list
   * is fetched once the current socket has the team (its `subscribed` or `resync`): at once when
   * it has, else when it arrives, on this socket or the next.
   */
  resync (teamId: string): void {
    if (this.#teams.has(teamId)) this.#sync(teamId, 'requested')
  }

  #track (teamId: string): void {
    this.#teams.set(teamId, { seq: undefined, syncing: false, syncGeneration: 0, held: [], live: false, reason: 'initial', loadedOn: -1 })
  }

  /** No socket carries the teams any more (or a new one starts): a list waits for the next `subscribed` or `resync`. */
  #offline (): void {
    this.#socketCount++
    for (const team of this.#teams.values()) team.live = false
  }

  /** Drops a team the user is not (or no longer) a member of, and says so. */
  #forbidden (teamId: string, message = `Not a member of team ${teamId}`): void {
    this.#teams.delete(teamId)
    this.emit('error', { code: ErrorCode.FORBIDDEN_TEAM, message, teamId })
  }

  /** Stops for good, until `connect()`: whatever waits on the connection is told why. */
  #finish (error: AtlasClientError): void {
    this.#active = false
    this.#stopping = undefined
    this.#stoppedBy = error
    this.emit('stopped', error)
  }

  /**
   * The URL of the next attempt (no credential: that goes in a header or subprotocol). Teams the
   * server is known to allow go in `teams=` with their resume position in `since=`; others are
   * subscribed by frame after `welcome`, so a team the principal lost can never make every
   * upgrade fail.
   */
  #url (): string {
    this.#inUrl = new Set([...this.#teams.keys()].filter((teamId) => this.#allowed?.has(teamId) === true))
    const since = [...this.#inUrl].flatMap((teamId) => {
      const seq = this.#teams.get(teamId)?.seq
      return seq === undefined ? [] : [`${teamId}:${seq}`]
    })
    const params = new URLSearchParams({ teams: [...this.#inUrl].join(',') })
    if (since.length > 0) params.set('since', since.join(','))
    return `${this.#targets[this.#current].ws}?${params.toString()}`
  }

  async #tokenForAttempt (): Promise<string | undefined> {
    const fresh = this.#fresh
    this.#fresh = undefined
    const token = fresh !== undefined ? fresh.token : await this.#credential.current()
    this.#attemptToken = token
    return token
  }

  /** A socket closed (not by `close()`): move on to the next instance, and handle refusals. */
  #onSocketClosed (code: number, reason: string): CloseVerdict | Promise<CloseVerdict> {
    const refreshToken = this.#refreshing?.token ?? this.#refreshSent
    this.#refreshSent = undefined
    this.#abandonRefresh()
    this.#current = (this.#current + 1) % this.#targets.length
    if (code === CloseCode.FORBIDDEN) {
      // `forbidden_team: <teamId>`. Whatever it names, the next welcome tells again which teams
      // are ours; until then every team is subscribed by frame, so the next upgrade cannot fail the same way.
      this.#allowed = undefined
      const prefix = `${ErrorCode.FORBIDDEN_TEAM}: `
      const teamId = reason.startsWith(prefix) ? reason.slice(prefix.length) : undefined
      if (teamId !== undefined && this.#teams.has(teamId)) this.#forbidden(teamId)
      return 'retry'
    }
    if (code === CloseCode.UNAUTHORIZED) {
      // A refused refresh: the token refused is the one the refresh carried, not the socket's.
      const refused = reason === REFRESH_REFUSED && refreshToken !== undefined ? refreshToken : this.#attemptToken
      return this.#refused(refused, reason === '' ? 'unauthorized' : reason)
    }
    if (code === CloseCode.REVOKED) return this.#refused(this.#attemptToken, reason === '' ? 'revoked' : reason, 'revoked')
    return 'retry'
  }

  /**
   * The server refused `refused` (4001 on the socket, 401 over HTTP), or revoked the user the
   * socket carrying it stood for (4004). With `getToken`, a fresh credential is asked for and
   * the next attempt uses it; with none, or when it is the same one, retrying cannot help: the
   * client stops.
   */
  async #refused (refused: string | undefined, message: string, code: 'unauthorized' | 'revoked' = 'unauthorized'): Promise<CloseVerdict> {
    this.emit('error', { code, message })
    const stop = (why: string): CloseVerdict => {
      const what = code === 'revoked' ? 'the host revoked this user' : 'the credential was refused'
      this.#stopping = new AtlasClientError(code, `atlas client: ${what} (${message}); ${why}`)
      return 'stop'
    }
    if (!this.#credential.renewable) return stop(refused === undefined ? 'none was given (token or getToken)' : `no getToken to ask for a ${code === 'revoked' ? 'different' : 'fresh'} one`)
    let fresh: string | undefined
    try {
      fresh = await this.#credential.current()
    } catch {
      // getToken failed this time: the next attempt asks it again.
      return 'retry'
    }
    if (fresh === refused) return stop('getToken returned the same one')
    this.#fresh = { token: fresh }
    return 'retry'
  }

  #onHttpUnauthorized (error: AtlasApiError): void {
    if (this.#httpRefusal !== undefined) return
    this.#httpRefusal = (async () => {
      if (!this.#active) {
        this.emit('error', { code: 'unauthorized', message: error.message })
        return
      }
      const verdict = await this.#refused(refusedCredentialOf(error), error.message)
      if (verdict === 'stop' && this.#active && !this.#connection.stop(CloseCode.UNAUTHORIZED, error.message)) {
        this.#finish(this.#stopping ?? new AtlasClientError('unauthorized', error.message))
      }
    })().finally(() => { this.#httpRefusal = undefined })
  }

  #onFrame (frame: ServerFrame): void {
    if (isTaskEvent(frame)) {
      this.#onEvent(frame)
      return
    }
    switch (frame.type) {
      case 'welcome': this.#onWelcome(frame); break
      case 'refreshed': this.#onRefreshed(frame.teams, frame.expiresAt); break
      case 'unsubscribed':
        // With a reason the server ended it (any reason counts as `revoked`): the principal lost
        // the team, and subscribing again would be refused. Without, it answers our `unsubscribe`.
        if (frame.reason !== undefined) this.#lost(frame.teamId, `Membership of team ${frame.teamId} was revoked`)
        break
      case 'subscribed': {
        const team = this.#teams.get(frame.teamId)
        if (team === undefined) break
        team.live = true
        this.emit('subscribed', { teamId: frame.teamId, seq: frame.seq, replayed: frame.replayed })
        if (this.#teams.get(frame.teamId) !== team) break
        if ((team.seq === undefined || team.syncing) && team.loadedOn !== this.#socketCount) {
          // A first load, a load asked for before this socket had the team, or one started on an
          // earlier socket: (re)started now, so the list is at least as recent as the point this
          // subscription starts from. Events from here on are held meanwhile. (One started on
          // this socket is left alone: this is a repeated `subscribed`.)
          this.#sync(frame.teamId, team.seq === undefined ? 'initial' : team.reason)
        } else if (!team.syncing && team.seq !== undefined && team.seq < frame.seq) {
          // Subscribed from a later point than the last event applied (a list arrived after the
          // subscribe went out without a position): the events in between will not come.
          this.#sync(frame.teamId, 'gap')
        }
        break
      }
      case 'resync': {
        const team = this.#teams.get(frame.teamId)
        if (team === undefined) break
        team.live = true
        this.#sync(frame.teamId, frame.reason)
        break
      }
      case 'error':
        // `forbidden_team` names its team (servers from before `teamId` did not): the subscribe
        // was refused, the principal lost the team, as with `unsubscribed` revoked.
        if (frame.code === ErrorCode.FORBIDDEN_TEAM && frame.teamId !== undefined) {
          this.#lost(frame.teamId, frame.message)
          break
        }
        this.emit('error', { code: frame.code, message: frame.message, ...(frame.teamId === undefined ? {} : { teamId: frame.teamId }) })
        this.#onErrorFrame(frame.code)
        break
    }
  }

  /**
   * The server took a team away (`unsubscribed` revoked, or a `subscribe` refused with
   * `forbidden_team`): no longer allowed; if followed, dropped with an error. (Not followed: it
   * was dropped already, or unsubscribed meanwhile; nothing more to say.)
   */
  #lost (teamId: string, message: string): void {
    this.#allowed?.delete(teamId)
    if (this.#teams.has(teamId)) this.#forbidden(teamId, message)
  }

  #onWelcome ({ userId, teams, expiresAt }: WelcomeFrame): void {
    // A new socket: every team waits for its `subscribed` (or `resync`) on it before a list.
    this.#offline()
    this.#userId = userId
    this.#allowed = new Set(teams)
    this.#granted = [...teams]
    this.#refreshOff = false
    this.#refreshSent = undefined
    // The connection is open (it emits `frame` after counting the welcome), so the plan is kept.
    this.#scheduleRefresh(expiresAt)
    this.emit('welcome', { userId, teams: [...teams], ...(expiresAt === undefined ? {} : { expiresAt }) })
    const teamsByFrame: string[] = []
    // Pairs, made into an object at the end: a team id is any string of the id alphabet, and
    // `since[teamId] = …` with `__proto__` would set the object's prototype instead of a key.
    const since: Array<[string, number]> = []
    for (const [teamId, team] of this.#teams) {
      if (this.#inUrl.has(teamId)) continue
      if (!this.#allowed.has(teamId)) {
        this.#forbidden(teamId)
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

  /**
   * Fetches the team's list, then applies the held events that are newer than it. Events are
   * held from now on; the fetch itself starts only once the current socket has the team (its
   * `subscribed` or `resync`, which restart a load waiting or under way).
   */
  #sync (teamId: string, reason: SnapshotReason): void {
    const team = this.#teams.get(teamId)
    if (team === undefined) return
    // A load under way is superseded: its answer is dropped.
    const generation = ++team.syncGeneration
    team.syncing = true
    team.reason = reason
    if (!team.live) return
    team.loadedOn = this.#socketCount
    const backoff = new Backoff(this.#syncBackoff)
    const run = async (): Promise<void> => {
      this.emit('resyncing', { teamId, reason })
      for (;;) {
        // Superseded, or the socket went away meanwhile (the next one's `subscribed` or `resync` starts it over).
        if (this.#teams.get(teamId) !== team || team.syncGeneration !== generation || !team.live) return
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
          // Lost membership: retrying cannot help.
          if (status === 403) {
            this.#forbidden(teamId)
            return
          }
          // A 401 was reported as `unauthorized` already: a fresh credential is on its way, or the client stops.
          if (status !== 401) this.emit('error', { code: 'resync_failed', message: `Loading team ${teamId} failed: ${(err as Error).message}`, teamId })
          await new Promise((resolve) => setTimeout(resolve, backoff.next()))
          if (!this.#active) return
        }
      }
    }
    void run()
  }
}

function targetsOf (options: AtlasClientOptions): Target[] {
  const page = (globalThis as { location?: { href: string, origin: string } }).location
  const given = options.baseUrl ?? page?.origin
  if (given === undefined) throw new TypeError('atlas client: baseUrl is required outside a browser')
  // In a page a relative base (`/api`) is the page's own origin's.
  const bases = (typeof given === 'string' ? [given] : [...given]).map((base) => absolute(base, page?.href))
  if (bases.length === 0 || !bases.every((base) => base !== undefined && /^https?:\/\//i.test(base))) {
    throw new TypeError('atlas client: baseUrl must be an http(s) URL or a non-empty list of them')
  }
  if (options.realtimeUrl !== undefined && bases.length > 1) throw new TypeError('atlas client: realtimeUrl goes with a single baseUrl; with a list, each socket is its baseUrl + /realtime')
  return (bases as string[]).map((base) => {
    const http = base.replace(/\/+$/, '')
    return { http, ws: options.realtimeUrl ?? `${http.replace(/^http/i, 'ws')}/realtime` }
  })
}

function absolute (base: unknown, pageHref: string | undefined): string | undefined {
  if (typeof base !== 'string') return undefined
  try {
    return new URL(base, pageHref).href
  } catch {
    return undefined
  }
}
