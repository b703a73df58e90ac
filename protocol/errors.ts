// The error catalogue: every error the suite answers, as data. Dependency-free (a browser can
// load it). HTTP codes are defined here; frame error codes and close codes are defined in
// constants.ts and only described here, keyed by their constant's name (the docs generator
// checks that every constant has its description and no description lacks its constant).
// lib/errors.ts builds the server's error classes from HTTP_ERRORS; `npm run docs` writes the
// tables of docs/protocol.md from all three.

/** One HTTP error the suite can answer: the body's `code` is the key. */
export interface HttpErrorEntry {
  readonly statusCode: number
  /**
   * The body's `message`, in @fastify/error's format (`%s` takes the arguments). Absent for
   * the codes Fastify itself raises and the suite passes through (and for BAD_REQUEST, the
   * code given to a framework error that has none).
   */
  readonly message?: string
  /** When it is answered, for docs/protocol.md's error body table. */
  readonly cause: string
  /** When a WebSocket upgrade is refused with it (docs/protocol.md, "A refused upgrade"). */
  readonly upgrade?: string
}

/** HTTP error codes (the `code` of an error body), in the order the docs list them. */
export const HTTP_ERRORS = {
  FST_ERR_VALIDATION: {
    statusCode: 400,
    cause: 'Body, path parameter or header breaks a rule; `message` names the place, e.g. `body/title Expected string`.'
  },
  INVALID_TASK: {
    statusCode: 400,
    message: '%s',
    cause: '`dueDate` is not a real calendar day, or a string holds a lone surrogate (not well-formed UTF-16).'
  },
  INVALID_LIMIT: {
    statusCode: 400,
    message: 'limit must be an integer from 1 to %s',
    cause: 'The list\'s `limit` is not an integer from 1 to the maximum (default 1,000).'
  },
  INVALID_CURSOR: {
    statusCode: 400,
    message: 'cursor is not one this server handed out: start again without it',
    cause: 'The list\'s `cursor` is not one the server handed out.'
  },
  FST_ERR_CTP_INVALID_JSON_BODY: {
    statusCode: 400,
    cause: 'The body is not JSON.'
  },
  FST_ERR_CTP_EMPTY_JSON_BODY: {
    statusCode: 400,
    cause: 'The body is empty with a JSON content type.'
  },
  INVALID_QUERY: {
    statusCode: 400,
    message: '%s',
    cause: 'The upgrade\'s `teams` or `since` is malformed, or given more than once.',
    upgrade: '`teams` or `since` is malformed, or given more than once.'
  },
  BAD_REQUEST: {
    statusCode: 400,
    cause: 'Any other malformed request the framework refuses without a code of its own.'
  },
  UNAUTHORIZED: {
    statusCode: 401,
    message: 'A valid access token is required',
    cause: 'No valid credential. Carries `WWW-Authenticate: Bearer` (the host may word the message and the challenge).',
    upgrade: 'No credential, or the host\'s `authenticate` rejected it. Carries `WWW-Authenticate: Bearer` (or the host\'s challenge). A client that offered `atlas.v1` gets close code 4001 instead.'
  },
  FORBIDDEN_TEAM: {
    statusCode: 403,
    message: 'Not a member of team %s',
    cause: 'The principal is not a member of the team.',
    upgrade: '`teams` names a team the principal does not belong to. A client that offered `atlas.v1` gets close code 4003 instead.'
  },
  FORBIDDEN_ORIGIN: {
    statusCode: 403,
    message: 'Origin %s may not open this socket',
    cause: 'An upgrade from a page whose origin the host does not allow.',
    upgrade: 'The request carries an `Origin` header (a browser page) that is neither the server\'s own origin nor one the host allows (`allowedOrigins`). Checked before the credential. Requests without `Origin` are not affected.'
  },
  TASK_NOT_FOUND: {
    statusCode: 404,
    message: 'Task %s not found',
    cause: 'No such task in this team.'
  },
  NOT_A_WEBSOCKET_ROUTE: {
    statusCode: 404,
    message: '%s %s is not a WebSocket endpoint',
    cause: 'An upgrade request to an HTTP route (the task routes, the host\'s own), refused before the route\'s hooks or handler run.'
  },
  MUTATION_ID_CONFLICT: {
    statusCode: 409,
    message: 'Mutation id %s was already used for a different request',
    cause: '`Idempotency-Key` reused for a different request.'
  },
  PRECONDITION_FAILED: {
    statusCode: 412,
    message: 'Task %s is at version %s, not the one given in If-Match',
    cause: '`If-Match` does not name the current version.'
  },
  FST_ERR_CTP_BODY_TOO_LARGE: {
    statusCode: 413,
    cause: 'Body larger than the limit.'
  },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: {
    statusCode: 415,
    cause: 'Body is not `application/json`.'
  },
  RATE_LIMITED: {
    statusCode: 429,
    message: 'Too many changes: at most %s per %s s; retry in %s s',
    cause: 'The user made too many mutations in the window. `Retry-After` and `X-RateLimit-*` headers. Nothing changed; retry after `Retry-After` seconds (with the same `Idempotency-Key`).'
  },
  AUTH_RATE_LIMITED: {
    statusCode: 429,
    message: 'Too many failed authentications from this address: retry in %s s',
    cause: 'Too many failed authentications from this address; the credential was not checked. `Retry-After` and `X-RateLimit-*` headers.',
    upgrade: 'Too many failed authentications from this address (see [Authentication](#authentication)); the credential is not checked. Carries `Retry-After` (seconds).'
  },
  TOO_MANY_CONNECTIONS: {
    statusCode: 429,
    message: 'At most %s connections per user on this instance',
    cause: 'An upgrade from a user who holds the maximum of connections on this instance.',
    upgrade: 'The user already holds `maxConnectionsPerUser` (default 32) connections on this instance. Carries `Retry-After` (seconds).'
  },
  INTERNAL: {
    statusCode: 500,
    message: 'Internal error',
    cause: 'Anything else (logged on the server). Safe to retry with the same `Idempotency-Key`.'
  },
  SERVER_FULL: {
    statusCode: 503,
    message: 'This instance is at its connection limit; try again later',
    cause: 'An upgrade to an instance that holds its maximum of connections.',
    upgrade: 'The instance holds its maximum of connections (`maxConnections`, default 20,000). Carries `Retry-After` (seconds).'
  },
  DATABASE_UNAVAILABLE: {
    statusCode: 503,
    message: 'The database is unavailable; try again later',
    cause: 'The database (PostgreSQL) could not be reached, went away or did not answer in time. Carries `Retry-After` (seconds). The mutation was not applied, or is safe to retry with the same `Idempotency-Key`.'
  },
  SERVER_OVERLOADED: {
    statusCode: 503,
    message: 'This instance is overloaded; try again later',
    cause: 'A mutation (any `POST`, `PUT`, `PATCH` or `DELETE`) while the instance is overloaded (event-loop delay or heap past the host\'s `overload` limits). Carries `Retry-After` (seconds). Reads and open sockets are served as usual.',
    upgrade: 'The instance is overloaded (the host\'s `overload` limits: event-loop delay, heap). Checked first, before the request is read. Carries `Retry-After` (seconds).'
  }
} as const satisfies Record<string, HttpErrorEntry>

export type HttpErrorCode = keyof typeof HTTP_ERRORS

/** The checks of a WebSocket upgrade, in the order they run; the first that fails answers. */
export const UPGRADE_REFUSAL_ORDER = [
  'SERVER_OVERLOADED',
  'FORBIDDEN_ORIGIN',
  'SERVER_FULL',
  'AUTH_RATE_LIMITED',
  'UNAUTHORIZED',
  'INVALID_QUERY',
  'FORBIDDEN_TEAM',
  'TOO_MANY_CONNECTIONS'
] as const satisfies readonly HttpErrorCode[]

/** What an `error` frame's code means; keyed by the names of ErrorCode in constants.ts. */
export interface FrameErrorEntry {
  readonly cause: string
  /** Whether it counts towards `maxInvalidFrames`. */
  readonly countsAsInvalid: boolean
}

export const FRAME_ERRORS = {
  INVALID_JSON: { cause: 'The text frame is not JSON.', countsAsInvalid: true },
  INVALID_FRAME: {
    cause: 'JSON, but not an object, or the frame does not match its type\'s shape (missing or unknown member, wrong type, bad team id, more than 100 teams, …).',
    countsAsInvalid: true
  },
  UNKNOWN_TYPE: { cause: '`type` is missing or is not `subscribe`, `unsubscribe`, `ping` or `refresh`.', countsAsInvalid: true },
  BINARY_UNSUPPORTED: { cause: 'A binary frame.', countsAsInvalid: true },
  FORBIDDEN_TEAM: {
    cause: '`subscribe` named a team outside the principal; the frame\'s other teams are subscribed. One per team named, with its `teamId`.',
    countsAsInvalid: true
  },
  RATE_LIMITED: {
    cause: 'The connection sent frames faster than its limit (`maxFramesPerSecond`, default 20 per second, after a burst of `frameBurst`, default 100), or more `refresh` frames than `maxRefreshesPerMinute` (default 10). The frame is ignored.',
    countsAsInvalid: true
  },
  REFRESH_UNSUPPORTED: {
    cause: 'A `refresh` frame, but the host gave the server no way to check a bare credential (`authenticateToken`). The connection keeps its credential: reconnect with the new one instead.',
    countsAsInvalid: false
  }
} as const satisfies Record<string, FrameErrorEntry>

/** What a close code means; keyed by the names of CloseCode in constants.ts. */
export interface CloseCodeEntry {
  /** Shown after the number: the RFC 6455 name, or what the suite's own code stands for. */
  readonly label: string
  readonly sentWhen: string
  readonly clientAction: string
}

export const CLOSE_CODES = {
  GOING_AWAY: {
    label: 'Going Away',
    sentWhen: 'The server is shutting down or restarting. Reason `server shutting down`.',
    clientAction: 'Reconnect (another instance will take it) after a short random delay, and resume with `since`.'
  },
  UNAUTHORIZED: {
    label: '(unauthorized)',
    sentWhen: 'Right after the handshake, to a client that offered the `atlas.v1` subprotocol, when the upgrade carried no valid credential (where other clients get `401`); reason `unauthorized: ` and the 401 message. When a `refresh` was refused; reason `unauthorized: refresh refused`. Or when the credential the socket holds expired (for the example\'s JWTs: the `exp` claim passed), checked at every heartbeat round, so up to `heartbeatMs` late; reason `credentials expired`. These reasons are stable: a client may tell them apart.',
    clientAction: 'Get a fresh credential and reconnect, resuming with `since`: nothing is lost. Reconnecting with the same credential is refused again: stop and tell the user.'
  },
  FORBIDDEN: {
    label: '(forbidden)',
    sentWhen: 'Right after the handshake, to a client that offered the `atlas.v1` subprotocol, when a team in the upgrade\'s `teams` is not the principal\'s (where other clients get `403` `FORBIDDEN_TEAM`). Reason `forbidden_team: ` and the team id.',
    clientAction: 'Reconnect without that team (the SDK puts only teams of the last `welcome` in the URL, so it meets this only after losing a team).'
  },
  REVOKED: {
    label: '(revoked)',
    sentWhen: 'The host revoked the user (`fastify.atlasRevoke({ userId })`, on any instance): every socket of the user, on every instance, is closed with it within about a second. Reason `revoked`.',
    clientAction: 'Stop and tell the user. A client that can get a different credential may reconnect with it (the host\'s `authenticate` decides); the same one is likely refused with 4001.'
  },
  POLICY_VIOLATION: {
    label: 'Policy Violation',
    sentWhen: 'More than `maxInvalidFrames` invalid frames (refused and rate-limited frames included). Reason `too many invalid frames`.',
    clientAction: 'A client bug: log it. Reconnect with backoff and resume, but fix the frames.'
  },
  MESSAGE_TOO_BIG: {
    label: 'Message Too Big',
    sentWhen: 'A client frame larger than the limit (64 KiB by default). Sent by the WebSocket layer, without a reason.',
    clientAction: 'A client bug: log it; do not resend that frame. Reconnect with backoff and resume.'
  },
  SLOW_CONSUMER: {
    label: '(slow consumer)',
    sentWhen: 'The client did not read fast enough: the data queued for it passed the server\'s limit (`maxBufferedBytes`, 1 MiB by default), or, during a replay, it took nothing for `heartbeatMs`. Reason `slow consumer: reconnect and resume`. Events queued after the cut-off are not sent.',
    clientAction: 'Reconnect and resume with `since`: nothing is lost.'
  },
  INTERNAL_ERROR: {
    label: 'Internal Error',
    sentWhen: 'The server could not serve a subscription (reading the team\'s log failed, e.g. the database is unreadable); logged on the server. Reason `internal error: reconnect and resume`.',
    clientAction: 'Reconnect with backoff and resume with `since`: nothing is lost.'
  },
  TRY_AGAIN_LATER: {
    label: 'Try Again Later',
    sentWhen: 'The instance reached a connection limit between the upgrade\'s check and the socket\'s start (concurrent upgrades).',
    clientAction: 'Reconnect with backoff.'
  },
  NORMAL: {
    label: 'Normal Closure',
    sentWhen: 'Never by the server of its own accord; a client closes with it when it is done.',
    clientAction: 'Nothing: the client asked for it.'
  },
  HEARTBEAT_TIMEOUT: {
    label: '(heartbeat timeout)',
    sentWhen: 'Never by the server: the SDK closes with it a socket that did not answer its ping in time.',
    clientAction: 'Reconnect with backoff and resume (the SDK does).'
  }
} as const satisfies Record<string, CloseCodeEntry>

/** A connection dropped without a close frame: no code is sent, the client's socket reports 1006. */
export const NO_CLOSE_FRAME: CloseCodeEntry = {
  label: '*none* (`1006` locally)',
  sentWhen: 'The server dropped the TCP connection without a close frame: the client did not answer a heartbeat ping in time, or a slow consumer did not even take its 4008 frame within `closeGraceMs` (2 s by default); also any network failure.',
  clientAction: 'Reconnect with backoff and resume.'
}
