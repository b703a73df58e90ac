// The wire protocol's constants. Dependency-free on purpose: the browser loads this file as it
// is (the SDK's only runtime import), so it must not import anything, not even TypeBox.

/** Version of the wire protocol described in docs/protocol.md, sent in `welcome`. */
export const PROTOCOL_VERSION = 1

/**
 * The WebSocket subprotocol of this protocol version. A client offers it first in
 * `Sec-WebSocket-Protocol`; the server selects it. A client that offers it is told a refused
 * credential with close code 4001 (4003 for a refused team) after the handshake, where a browser
 * can see it, instead of an HTTP 401/403 that a browser reports only as 1006.
 */
export const SUBPROTOCOL = `atlas.v${PROTOCOL_VERSION}`

/**
 * Prefix of the `Sec-WebSocket-Protocol` entry that carries a bearer credential from a browser,
 * which cannot set an Authorization header on a WebSocket: `base64url.bearer.atlas.` followed by
 * the token's UTF-8 bytes in base64url without padding (as Kubernetes and Phoenix do). Offered
 * after SUBPROTOCOL, never selected, taken out of the request before anything logs it.
 */
export const BEARER_SUBPROTOCOL_PREFIX = 'base64url.bearer.atlas.'

/** WebSocket close codes of the protocol (docs/protocol.md, "Close codes"). */
export const CloseCode = {
  NORMAL: 1000,
  /** The server is shutting down or restarting: reconnect (elsewhere) and resume. */
  GOING_AWAY: 1001,
  /**
   * No valid credential: refused at the upgrade (to a client that offered SUBPROTOCOL), or the
   * one the socket was opened with expired. Reconnect with a fresh credential, not the same one.
   */
  UNAUTHORIZED: 4001,
  /** A team named in the upgrade's `teams` is not the principal's (to a client that offered SUBPROTOCOL). */
  FORBIDDEN: 4003,
  /** The host revoked the user: every socket of theirs, on every instance, is closed with it. */
  REVOKED: 4004,
  /** Too many invalid frames. */
  POLICY_VIOLATION: 1008,
  /** A frame larger than the server's limit (sent by the ws library itself). */
  MESSAGE_TOO_BIG: 1009,
  /** The client did not read fast enough; its backlog passed the server's limit. Reconnect and resume. */
  SLOW_CONSUMER: 4008,
  /** The instance is at its connection limit (a race the upgrade's 429/503 did not catch): retry later. */
  TRY_AGAIN_LATER: 1013,
  /** The server failed to serve the connection (a subscription could not be read from the database): reconnect and resume. */
  INTERNAL_ERROR: 1011,
  /** Not sent by the server: the client closed a socket it found dead (no pong in time). */
  HEARTBEAT_TIMEOUT: 4000
} as const
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode]

/** Codes of `error` frames (docs/protocol.md, "Error frame codes"). */
export const ErrorCode = {
  INVALID_JSON: 'invalid_json',
  INVALID_FRAME: 'invalid_frame',
  UNKNOWN_TYPE: 'unknown_type',
  BINARY_UNSUPPORTED: 'binary_unsupported',
  FORBIDDEN_TEAM: 'forbidden_team',
  RATE_LIMITED: 'rate_limited',
  REFRESH_UNSUPPORTED: 'refresh_unsupported'
} as const
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode]

/** Why the server ended a subscription the client did not ask to end (`unsubscribed.reason`). */
export const UNSUBSCRIBE_REASONS = ['revoked'] as const
export type UnsubscribeReason = (typeof UNSUBSCRIBE_REASONS)[number]

/** Why the server asks a client to refetch a team's list instead of resuming (`resync.reason`). */
export const RESYNC_REASONS = ['history_pruned', 'ahead_of_log', 'too_far_behind', 'replay_limited'] as const
export type ResyncReason = (typeof RESYNC_REASONS)[number]

export const TASK_STATUSES = ['todo', 'in_progress', 'done'] as const
export type TaskStatus = (typeof TASK_STATUSES)[number]

/** A created task's fields, with the values a create body may leave out filled in. */
export function createdTaskFields (input: { title: string, description?: string, status?: TaskStatus, assignee?: string | null, dueDate?: string | null }):
  { title: string, description: string, status: TaskStatus, assignee: string | null, dueDate: string | null } {
  return {
    title: input.title,
    description: input.description ?? '',
    status: input.status ?? 'todo',
    assignee: input.assignee ?? null,
    dueDate: input.dueDate ?? null
  }
}

/** The fields a client writes, in the order `task.updated`'s `changes` lists them. */
export const TASK_FIELDS = ['title', 'description', 'status', 'assignee', 'dueDate'] as const
export type TaskField = (typeof TASK_FIELDS)[number]

// Team ids end up in Redis channel names and in the `since` query parameter (as `team:seq`
// pairs separated by commas), so they are kept to a conservative alphabet.
export const TEAM_ID_PATTERN = '^[A-Za-z0-9_-]{1,64}$'
/** Task ids are lowercase UUIDs assigned by the server. */
export const TASK_ID_PATTERN = '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
/** The Idempotency-Key header: a client-chosen mutation id, echoed as the event's `mutationId`. */
export const MUTATION_ID_PATTERN = '^[A-Za-z0-9_.:-]{1,128}$'
/** A calendar date; the repository also checks it names a real day. */
export const DUE_DATE_PATTERN = '^\\d{4}-\\d{2}-\\d{2}$'

/** Field and frame limits (lengths in UTF-16 code units). */
export const Limits = {
  TITLE_MAX: 200,
  DESCRIPTION_MAX: 10_000,
  ASSIGNEE_MAX: 128,
  /** Teams named in one `subscribe` or `unsubscribe` frame. */
  TEAMS_PER_FRAME_MAX: 100,
  /** Length of a string `ping` id. */
  PING_ID_MAX: 64,
  /** Length of the credential in a `refresh` frame (a JWT with many claims is a few KB). */
  REFRESH_TOKEN_MAX: 8192
} as const

const TEAM_ID = new RegExp(TEAM_ID_PATTERN)

/** Whether `value` is a team id the protocol accepts (the same rule as the `TeamId` schema). */
export function isTeamId (value: unknown): value is string {
  return typeof value === 'string' && TEAM_ID.test(value)
}
