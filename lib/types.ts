// Server-side types. The task, its events and the frames are the wire contract's: protocol/.

/** Who is asking: returned by the integrator's `authenticate`. */
export interface Principal {
  userId: string
  teams: readonly string[]
  /**
   * When the credentials stop being valid (epoch ms). A socket outliving it is closed with
   * 4001 at the next heartbeat round, so the client reconnects with fresh credentials.
   */
  expiresAt?: number
}

/** An event as it leaves the log: its position and its wire bytes, serialised once. */
export interface LoggedEvent {
  teamId: string
  seq: number
  payload: string
  /**
   * When this instance got it (committed it, or received it from the broker), on the monotonic
   * clock (`performance.now()`): the start of its delivery lag. Absent on events read from the log.
   */
  arrivedAt?: number
}
