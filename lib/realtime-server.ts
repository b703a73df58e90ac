import type { WebSocket } from 'ws'
import { ClientConnection, type ClientConnectionOptions } from './client-connection.js'
import type { Hub } from './hub.js'
import { CloseCode } from './protocol.js'
import type { Principal } from './types.js'

export type RealtimeServerOptions = ClientConnectionOptions

/**
 * The live connections of one instance: accepts authenticated sockets, runs one heartbeat
 * timer for all of them (not one per socket), and closes them all with 1001 at shutdown.
 */
export class RealtimeServer {
  readonly #hub: Hub
  readonly #options: RealtimeServerOptions
  readonly #connections = new Set<ClientConnection>()
  readonly #heartbeat: NodeJS.Timeout

  constructor (hub: Hub, options: RealtimeServerOptions) {
    this.#hub = hub
    this.#options = options
    this.#heartbeat = setInterval(() => {
      const now = Date.now()
      for (const connection of this.#connections) {
        const { expiresAt } = connection.principal
        if (expiresAt !== undefined && expiresAt <= now) connection.close(CloseCode.CREDENTIALS_EXPIRED, 'credentials expired')
        else connection.ping()
      }
    }, options.heartbeatMs)
    this.#heartbeat.unref()
  }

  get connectionCount (): number { return this.#connections.size }

  accept (socket: WebSocket, principal: Principal, teams: readonly string[], since: ReadonlyMap<string, number>): ClientConnection {
    const connection = new ClientConnection(socket, principal, this.#hub, this.#options)
    this.#connections.add(connection)
    socket.once('close', () => { this.#connections.delete(connection) })
    connection.start(teams, since)
    return connection
  }

  /** Tells every client the server is going away (1001) so it reconnects elsewhere and resumes. */
  close (): void {
    clearInterval(this.#heartbeat)
    for (const connection of this.#connections) connection.close(CloseCode.GOING_AWAY, 'server shutting down')
  }
}
