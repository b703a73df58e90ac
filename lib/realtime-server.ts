import type { WebSocket } from 'ws'
import { ClientConnection, type CheckTokenFrom, type ClientConnectionOptions } from './client-connection.js'
import type { Hub } from './hub.js'
import { CloseCode } from '../protocol/constants.js'
import { TokenBucket } from './token-bucket.js'
import type { Principal } from './types.js'
import type { Logger } from './logger.js'

export interface RealtimeServerOptions extends ClientConnectionOptions {
  /** Open connections this instance accepts in all. */
  maxConnections: number
  /** Open connections of one user (principal's userId) on this instance. */
  maxConnectionsPerUser: number
  /** At shutdown, how long sockets get to answer the 1001 close frame before they are destroyed. */
  shutdownGraceMs: number
  /** Checks the credential of a `refresh` frame from an address; without it, `refresh` is answered `refresh_unsupported`. */
  checkToken?: CheckTokenFrom
  /** Connections log through children of it (open, resume, resync, slow-consumer cut, close). */
  logger?: Logger
  /** The instance's id (its broker's), in the diagnostics messages of its connections. */
  instance?: string
}

/** Why a new connection is refused: the instance is full, or the user holds too many. */
export type Refusal = 'server_full' | 'user_limit'

/**
 * The live connections of one instance: admits and accepts authenticated sockets within the
 * connection limits, runs one heartbeat timer for all of them (not one per socket), and closes
 * them all with 1001 at shutdown, destroying within a deadline those that never answer.
 */
export class RealtimeServer {
  readonly #hub: Hub
  readonly #options: RealtimeServerOptions
  readonly #connections = new Set<ClientConnection>()
  /**
   * Per user id (a Map: user ids are the integrator's, any string): open connections, and the
   * replay budget they share, so that reconnecting does not refill it. A user is forgotten once
   * no connection is open and the budget has refilled.
   */
  readonly #users = new Map<string, { connections: Set<ClientConnection>, replay: TokenBucket }>()
  readonly #heartbeat: NodeJS.Timeout

  constructor (hub: Hub, options: RealtimeServerOptions) {
    this.#hub = hub
    this.#options = options
    this.#heartbeat = setInterval(() => {
      const now = Date.now()
      for (const connection of this.#connections) {
        const { expiresAt } = connection.principal
        if (expiresAt !== undefined && expiresAt <= now) connection.close(CloseCode.UNAUTHORIZED, 'credentials expired')
        else connection.ping()
      }
      for (const [userId, user] of this.#users) {
        if (user.connections.size === 0 && user.replay.full(now)) this.#users.delete(userId)
      }
    }, options.heartbeatMs)
    this.#heartbeat.unref()
  }

  get connectionCount (): number { return this.#connections.size }

  /** Whether one more connection may open now: undefined, or why not. Without a principal, only the overall limit. */
  refusal (principal?: Principal): Refusal | undefined {
    if (this.#connections.size >= this.#options.maxConnections) return 'server_full'
    if (principal !== undefined && (this.#users.get(principal.userId)?.connections.size ?? 0) >= this.#options.maxConnectionsPerUser) return 'user_limit'
    return undefined
  }

  /**
   * Takes an upgraded socket. The upgrade was admitted with `refusal()`; when concurrent upgrades
   * passed that check together and the limit is reached meanwhile, the socket is closed with
   * 1013 (try again later) instead.
   */
  accept (socket: WebSocket, principal: Principal, teams: readonly string[], since: ReadonlyMap<string, number>, ip = ''): ClientConnection | undefined {
    const refused = this.refusal(principal)
    if (refused !== undefined) {
      socket.close(CloseCode.TRY_AGAIN_LATER, refused === 'server_full' ? 'server at its connection limit' : 'too many connections for this user')
      return undefined
    }
    const { userId } = principal
    let user = this.#users.get(userId)
    if (user === undefined) {
      const { replayBytesPerMinute } = this.#options
      user = { connections: new Set(), replay: new TokenBucket(replayBytesPerMinute, replayBytesPerMinute / 60) }
      this.#users.set(userId, user)
    }
    const connection = new ClientConnection(socket, principal, this.#hub, this.#options, { replayBudget: user.replay, checkToken: checkTokenFrom(this.#options.checkToken, ip), logger: this.#options.logger, instance: this.#options.instance })
    const counted = user
    counted.connections.add(connection)
    this.#connections.add(connection)
    socket.once('close', () => {
      this.#connections.delete(connection)
      counted.connections.delete(connection)
    })
    connection.start(teams, since)
    return connection
  }

  /**
   * Applies a revocation to this instance's sockets of `userId`: with `teamId`, each loses that
   * team (`unsubscribed` with reason `revoked`); without, each is closed with 4004. Returns how
   * many sockets it touched.
   */
  revoke (userId: string, teamId?: string): number {
    const connections = this.#users.get(userId)?.connections
    if (connections === undefined) return 0
    for (const connection of connections) {
      if (teamId === undefined) connection.close(CloseCode.REVOKED, 'revoked')
      else connection.revokeTeam(teamId)
    }
    return connections.size
  }

  /**
   * Tells every client the server is going away (1001) so it reconnects elsewhere and resumes;
   * resolves once all are closed, destroying after `shutdownGraceMs` those that never answered
   * (ws alone would wait 30 s for each).
   */
  async close (): Promise<void> {
    clearInterval(this.#heartbeat)
    const open = [...this.#connections]
    if (open.length === 0) return
    const closed = Promise.all(open.map(async (connection) => { await connection.ended }))
    for (const connection of open) connection.close(CloseCode.GOING_AWAY, 'server shutting down')
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<'deadline'>((resolve) => { timer = setTimeout(() => { resolve('deadline') }, this.#options.shutdownGraceMs) })
    const outcome = await Promise.race([closed, deadline])
    clearTimeout(timer)
    if (outcome === 'deadline') {
      for (const connection of this.#connections) connection.terminate()
      await closed
    }
  }
}

function checkTokenFrom (check: CheckTokenFrom | undefined, ip: string): ((token: string) => Promise<Principal | null>) | undefined {
  return check === undefined ? undefined : async (token) => await check(token, ip)
}
