/** Why an AtlasClient stopped, or why a promise waiting on it was given up. */
export type AtlasClientErrorCode =
  /** A team the user is not (or no longer) a member of; the client dropped it. */
  | 'forbidden_team'
  /** The credential was refused and no fresh one came (no `getToken`, or it returned the same token). */
  | 'unauthorized'
  /**
   * The host revoked the user (close code 4004) and no different credential came (no `getToken`,
   * or it returned the token the revoked socket carried).
   */
  | 'revoked'
  /** `reconnect.maxAttempts` attempts in a row failed. */
  | 'retries_exhausted'
  /** `client.close()` was called. */
  | 'closed'

/**
 * The rejection of a promise that waited on the connection (`TaskStore.start()`), and the value of
 * the client's `stopped` event. Check `code`, not the message.
 */
export class AtlasClientError extends Error {
  constructor (
    readonly code: AtlasClientErrorCode,
    message: string,
    /** With `forbidden_team`: the team. */
    readonly teamId?: string
  ) {
    super(message)
    this.name = 'AtlasClientError'
  }
}
