import createError from '@fastify/error'
import { STATUS_CODES } from 'node:http'
import { HTTP_ERRORS, type HttpErrorCode } from '../protocol/errors.js'
import type { Task } from '../protocol/schemas.js'

// The server's errors, one class per code of the catalogue (protocol/errors.ts), which holds
// each code's status and message; @fastify/error makes them, as Fastify makes its own. Each
// class is named after what went wrong; `instanceof` matches by code.

/** The codes the suite raises itself (the others are Fastify's, passed through). */
type OwnCode = { [C in HttpErrorCode]: (typeof HTTP_ERRORS)[C] extends { message: string } ? C : never }[HttpErrorCode]

/** The base class of one catalogue code; subclasses keep their own name (not 'FastifyError'). */
function define<C extends OwnCode> (code: C) {
  const { statusCode, message } = HTTP_ERRORS[code]
  const FastifyError = createError<C, (typeof HTTP_ERRORS)[C]['statusCode'], any[]>(code, message, statusCode)
  return class extends FastifyError {
    constructor (...args: any[]) {
      super(...args)
      this.name = new.target.name
    }
  }
}

export class UnauthorizedError extends define('UNAUTHORIZED') {
  constructor () { super() }
}

export class ForbiddenTeamError extends define('FORBIDDEN_TEAM') {
  constructor (readonly teamId: string) { super(teamId) }
}

export class ForbiddenOriginError extends define('FORBIDDEN_ORIGIN') {
  constructor (origin: string) { super(origin.slice(0, 200)) }
}

/** The upgrade's `teams` or `since` could not be read; the message says which. */
export class InvalidQueryError extends define('INVALID_QUERY') {
  constructor (message: string) { super(message) }
}

export class TaskNotFoundError extends define('TASK_NOT_FOUND') {
  constructor (readonly taskId: string) { super(taskId) }
}

/** If-Match named a version that is no longer current; `current` lets the client rebase. */
export class PreconditionFailedError extends define('PRECONDITION_FAILED') {
  constructor (readonly current: Task) { super(current.id, current.version) }
}

/** A mutation id was reused for a different request. */
export class MutationIdConflictError extends define('MUTATION_ID_CONFLICT') {
  constructor (readonly mutationId: string) { super(mutationId) }
}

export class InvalidTaskError extends define('INVALID_TASK') {
  constructor (message: string) { super(message) }
}

/** A list cursor that this server did not hand out (or that was altered). */
export class InvalidCursorError extends define('INVALID_CURSOR') {
  constructor () { super() }
}

/** A page size outside what the list accepts. */
export class InvalidLimitError extends define('INVALID_LIMIT') {
  constructor (readonly max: number) { super(max) }
}

/** Too many mutations by one user in a window; `retryAfterSeconds` says when to try again. */
export class RateLimitedError extends define('RATE_LIMITED') {
  constructor (max: number, windowSeconds: number, readonly retryAfterSeconds: number) { super(max, windowSeconds, retryAfterSeconds) }
}

/** Too many failed authentications from one address; `retryAfterSeconds` says when to try again. */
export class AuthRateLimitedError extends define('AUTH_RATE_LIMITED') {
  constructor (readonly retryAfterSeconds: number) { super(retryAfterSeconds) }
}

/** An upgrade by a user who holds `max` connections on this instance already. */
export class TooManyConnectionsError extends define('TOO_MANY_CONNECTIONS') {
  constructor (readonly max: number) { super(max) }
}

/** An upgrade to an instance at its connection limit. */
export class ServerFullError extends define('SERVER_FULL') {
  constructor () { super() }
}

export class ServerOverloadedError extends define('SERVER_OVERLOADED') {
  constructor () { super() }
}

/** An upgrade request to a route that is not a WebSocket endpoint. */
export class NotAWebSocketRouteError extends define('NOT_A_WEBSOCKET_ROUTE') {
  constructor (method: string, url: string) { super(method, url) }
}

/**
 * The database could not be reached or went away during a request: `cause` holds the driver's
 * error (logged, never sent). Nothing was changed, or a retry with the same mutation id is safe.
 */
export class DatabaseUnavailableError extends define('DATABASE_UNAVAILABLE') {
  constructor (cause?: Error) { super(...(cause === undefined ? [] : [{ cause }])) }
}

/** What a client is told of a failure on the server (the failure itself is logged). */
export class InternalError extends define('INTERNAL') {
  constructor () { super() }
}

/** The code of a 4xx the framework raised without one of its own. */
export const FALLBACK_CLIENT_ERROR_CODE: HttpErrorCode = 'BAD_REQUEST'

/** A bad plugin option, found at registration. A TypeError with a code, as Node's ERR_INVALID_ARG_TYPE. */
const OptionErrorBase = createError('ATLAS_ERR_OPTION', '%s: %s', 500, TypeError)
export class OptionError extends OptionErrorBase {
  constructor (plugin: string, message: string) {
    super(plugin, message)
    this.name = 'TypeError'
  }
}

/**
 * Redis could not be reached, or refused the connection, while the suite started: raised at
 * registration (never answered to a client). The message names the plugin, the address (any
 * password replaced by `***`), the cause and what to do; `cause` holds the connection's last
 * error (message and code only: ioredis attaches a refused AUTH's arguments, password included).
 */
const RedisUnreachableErrorBase = createError('ATLAS_ERR_REDIS_UNREACHABLE', '%s: %s', 500)
export class RedisUnreachableError extends RedisUnreachableErrorBase {
  constructor (plugin: string, message: string, readonly address: string, cause?: Error) {
    super(plugin, message, ...(cause === undefined ? [] : [{ cause }]))
    this.name = 'RedisUnreachableError'
  }
}

/**
 * PostgreSQL could not be reached, or refused the connection, when it was opened: raised at
 * start-up (never answered to a client). The message names the caller, the address (any
 * password replaced by `***`), the cause and what to do; `cause` holds the driver's error
 * (message and code only).
 */
const DatabaseUnreachableErrorBase = createError('ATLAS_ERR_DATABASE_UNREACHABLE', '%s: %s', 500)
export class DatabaseUnreachableError extends DatabaseUnreachableErrorBase {
  constructor (caller: string, message: string, readonly address: string, cause?: Error) {
    super(caller, message, ...(cause === undefined ? [] : [{ cause }]))
    this.name = 'DatabaseUnreachableError'
  }
}

/** The JSON body of an HTTP error (docs/protocol.md, "Error body"). */
export interface ErrorBody {
  statusCode: number
  code: string
  error: string
  message: string
}

/** The body answering `error`: its status and code, the status's reason phrase, its message. */
export function errorBody (error: { statusCode: number, code: string, message: string }): ErrorBody {
  return { statusCode: error.statusCode, code: error.code, error: STATUS_CODES[error.statusCode] ?? 'Error', message: error.message }
}
