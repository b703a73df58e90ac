import type { Task } from '../protocol/schemas.js'

/** Base of the errors the repository throws on purpose; `statusCode` is the HTTP status that fits. */
export class AtlasError extends Error {
  constructor (message: string, readonly code: string, readonly statusCode: number) {
    super(message)
    this.name = new.target.name
  }
}

export class TaskNotFoundError extends AtlasError {
  constructor (readonly taskId: string) {
    super(`Task ${taskId} not found`, 'TASK_NOT_FOUND', 404)
  }
}

/** If-Match named a version that is no longer current; `current` lets the client rebase. */
export class PreconditionFailedError extends AtlasError {
  constructor (readonly current: Task) {
    super(`Task ${current.id} is at version ${current.version}, not the one given in If-Match`, 'PRECONDITION_FAILED', 412)
  }
}

/** A mutation id was reused for a different request. */
export class MutationIdConflictError extends AtlasError {
  constructor (readonly mutationId: string) {
    super(`Mutation id ${mutationId} was already used for a different request`, 'MUTATION_ID_CONFLICT', 409)
  }
}

export class InvalidTaskError extends AtlasError {
  constructor (message: string) {
    super(message, 'INVALID_TASK', 400)
  }
}

/** A list cursor that this server did not hand out (or that was altered). */
export class InvalidCursorError extends AtlasError {
  constructor () {
    super('cursor is not one this server handed out: start again without it', 'INVALID_CURSOR', 400)
  }
}

/** A page size outside what the list accepts. */
export class InvalidLimitError extends AtlasError {
  constructor (readonly max: number) {
    super(`limit must be an integer from 1 to ${max}`, 'INVALID_LIMIT', 400)
  }
}

/** Too many requests of one kind in a window; `retryAfterSeconds` says when to try again. */
export class RateLimitedError extends AtlasError {
  constructor (message: string, code: 'RATE_LIMITED' | 'AUTH_RATE_LIMITED', readonly retryAfterSeconds: number) {
    super(message, code, 429)
  }
}
