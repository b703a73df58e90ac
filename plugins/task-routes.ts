import fp from 'fastify-plugin'
import type { FastifyError, FastifyPluginAsync, FastifyReply, FastifyRequest, FastifySchemaCompiler, preHandlerAsyncHookHandler } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type, type TSchema } from '@sinclair/typebox'
import { TypeCompiler, ValueErrorType, type ValueError } from '@sinclair/typebox/compiler'
import { DatabaseUnavailableError, errorBody, FALLBACK_CLIENT_ERROR_CODE, InternalError, InvalidLimitError, PreconditionFailedError, RateLimitedError, TaskNotFoundError } from '../lib/errors.js'
import type { MutationContext, MutationResult } from '../lib/repository.js'
import { ErrorResponse, MutationId, TaskCreateBody, TaskListQuery, TaskListResponse, TaskParams, TaskPatchBody, TaskSchema, TeamParams, type Task } from '../protocol/schemas.js'
import { requireTeam } from './auth.js'
import { sendError } from './send-error.js'
import { group, integer, optionError, optionsChecker, string, type OptionsOf } from './options.js'
import { rateLimitRedisOption, registerRateLimit } from './rate-limit.js'

export const AtlasTaskRoutesOptionsSchema = group({
  prefix: Type.Optional(string({
    pattern: /^\/.*[^/]$/,
    defaultText: 'none',
    description: 'Prefix of the task routes (`\'/api\'` gives `/api/teams/:teamId/tasks`); starts with `/`, does not end with one.'
  })),
  bodyLimit: Type.Optional(integer({ default: 64 * 1024, defaultNote: '64 KiB', description: 'Largest accepted JSON body, in bytes.' })),
  pageSize: Type.Optional(integer({
    default: 500,
    description: 'Tasks per page of the list when the request gives no `limit` (`maxPageSize` if that is lower). 500 tasks are about 130 KB and a few ms of one core; a team that fits in one page loads in one request.'
  })),
  maxPageSize: Type.Optional(integer({
    default: 1000,
    description: 'Largest `limit` a list request may ask for; above it `400` `INVALID_LIMIT`. Bounds what one request can make the server read and serialise (today\'s 20,000-task list took 377 ms in one piece and held up other clients\' events).'
  })),
  maxMutationsPerUser: Type.Optional(integer({
    allowZero: true,
    default: 600,
    description: '`POST`/`PATCH`/`DELETE` requests one user (the principal\'s `userId`) may make per `mutationWindowMs`, over all teams; past it `429` `RATE_LIMITED` with `Retry-After` and `X-RateLimit-*` headers. Counted after authentication and validation, so refused requests cost nothing. 600 a minute is ten a second for a whole minute, far beyond a person\'s bursts of edits; a script importing thousands of tasks with a user\'s token meets it and should pace itself (or the host raises it). `0`: no limit.'
  })),
  mutationWindowMs: Type.Optional(integer({ default: 60_000, description: 'Window of `maxMutationsPerUser`, in ms (fixed, from the user\'s first mutation in it).' })),
  rateLimitRedis: rateLimitRedisOption('Redis URL or ioredis options, so the limit holds across instances. Counted *written behind*: each instance counts a mutation in memory at once (no Redis round trip on the request: a round trip per mutation measured +14 % server CPU per delivery in the bench) and sends its counts to Redis in one pipeline every 100 ms, learning the others\' counts; a user counted past half the limit is also read back every 100 ms. The limit therefore holds across instances up to what they admit within 100 ms. The suite opens a connection of its own that never queues a command: with Redis down, each instance goes on limiting what it counted itself, and no mutation is failed or delayed. Unset: counted per instance.')
}, { $id: 'AtlasTaskRoutesOptions', description: 'Options of atlasTaskRoutes.' })

export type AtlasTaskRoutesOptions = OptionsOf<typeof AtlasTaskRoutesOptionsSchema>

/** Request header carrying the client's mutation id (idempotency key). */
export const MUTATION_ID_HEADER = 'idempotency-key'

const NAME = 'atlas-task-routes'
/** How often this instance's mutation counts go to Redis (and it learns the others'). */
const MUTATION_COUNT_FLUSH_MS = 100

const errorSchemas = { 400: ErrorResponse, 401: ErrorResponse, 403: ErrorResponse, 404: ErrorResponse, 429: ErrorResponse }

const checkOptions = optionsChecker(NAME, AtlasTaskRoutesOptionsSchema)

const taskRoutesPlugin: FastifyPluginAsync<AtlasTaskRoutesOptions> = async (fastify, rawOptions) => {
  const options = checkOptions(rawOptions)
  const { maxPageSize, maxMutationsPerUser: maxMutations, mutationWindowMs, bodyLimit } = options
  // The default page never exceeds a lower maximum; a page size given explicitly must not.
  const pageSize = rawOptions.pageSize === undefined ? Math.min(options.pageSize, maxPageSize) : options.pageSize
  if (pageSize > maxPageSize) throw optionError(NAME, `option pageSize (${pageSize}) must not exceed maxPageSize (${maxPageSize})`)
  // An encapsulated child: our strict validator and error format stay ours, the integrator's
  // instance keeps its own (Fastify's default Ajv would silently drop unknown fields and coerce).
  await fastify.register(async (scope) => {
    const app = scope.withTypeProvider<TypeBoxTypeProvider>()
    app.setValidatorCompiler(validatorCompiler)
    // Only JSON bodies: Fastify's default text/plain parser would hand a string to the schema.
    scope.removeContentTypeParser('text/plain')
    app.setErrorHandler(errorHandler)
    app.addHook('onRequest', authorize)

    const repository = scope.taskRepository

    // Per user, after authentication and validation (preHandler): a refused or malformed request
    // costs the user nothing, and nobody can spend another user's allowance.
    let preHandler: preHandlerAsyncHookHandler | undefined
    if (maxMutations > 0) {
      // Written behind: counting a mutation costs no Redis round trip (the bench measured one per
      // mutation at +14 % server CPU per delivery); instances share counts every 100 ms.
      await registerRateLimit(scope, NAME, options.rateLimitRedis, 'atlas-mutations:', { writeBehindMs: MUTATION_COUNT_FLUSH_MS })
      preHandler = scope.rateLimit({
        max: maxMutations,
        timeWindow: mutationWindowMs,
        keyGenerator: (request) => request.atlasPrincipal?.userId ?? request.ip,
        errorResponseBuilder: (_request, context) => {
          const { max, ttl } = context as typeof context & { max: number, ttl: number }
          const retryAfter = Math.ceil(ttl / 1000)
          return new RateLimitedError(max, mutationWindowMs / 1000, retryAfter)
        }
      })
    }

    app.get('/teams/:teamId/tasks', {
      schema: { params: TeamParams, querystring: TaskListQuery, response: { 200: TaskListResponse, ...errorSchemas } }
    }, async (request) => {
      const { limit, cursor } = request.query
      return await repository.list(request.params.teamId, { limit: limit === undefined ? pageSize : parseLimit(limit, maxPageSize), cursor })
    })

    app.post('/teams/:teamId/tasks', {
      bodyLimit,
      preHandler,
      schema: { params: TeamParams, body: TaskCreateBody, headers: mutationHeaders, response: { 200: TaskSchema, 201: TaskSchema, ...errorSchemas, 409: ErrorResponse } }
    }, async (request, reply) => {
      const result = await repository.create(request.params.teamId, request.body, mutationContext(request))
      const path = request.url.split('?', 1)[0]
      return sendTask(reply.code(result.replayed ? 200 : 201).header('location', `${path}/${result.task.id}`), result)
    })

    app.get('/teams/:teamId/tasks/:taskId', {
      schema: { params: TaskParams, response: { 200: TaskSchema, ...errorSchemas } }
    }, async (request, reply) => {
      const task = await repository.get(request.params.teamId, request.params.taskId)
      if (task === undefined) throw new TaskNotFoundError(request.params.taskId)
      return reply.header('etag', etagOf(task)).send(task)
    })

    app.patch('/teams/:teamId/tasks/:taskId', {
      bodyLimit,
      preHandler,
      schema: { params: TaskParams, body: TaskPatchBody, headers: mutationHeaders, response: { 200: TaskSchema, ...errorSchemas, 409: ErrorResponse, 412: ErrorResponse } }
    }, async (request, reply) => {
      const { teamId, taskId } = request.params
      return sendTask(reply, await repository.update(teamId, taskId, request.body, mutationContext(request)))
    })

    app.delete('/teams/:teamId/tasks/:taskId', {
      preHandler,
      schema: { params: TaskParams, headers: mutationHeaders, response: { 204: Type.Null(), ...errorSchemas, 409: ErrorResponse, 412: ErrorResponse } }
    }, async (request, reply) => {
      const { teamId, taskId } = request.params
      const result = await repository.delete(teamId, taskId, mutationContext(request))
      if (result.replayed) reply.header('idempotency-replayed', 'true')
      return reply.code(204).send(null)
    })
  }, { prefix: options.prefix })
}

const mutationHeaders = Type.Object({
  [MUTATION_ID_HEADER]: Type.Optional(MutationId),
  'if-match': Type.Optional(Type.String({ maxLength: 200 }))
})

async function authorize (request: FastifyRequest, reply: FastifyReply): Promise<void> {
  const principal = await request.server.atlasRequirePrincipal(request, reply)
  if (principal === null) return
  // Checked before the body is read or validated: a stranger learns nothing about the team.
  const { teamId } = request.params as { teamId?: string }
  if (teamId !== undefined) await requireTeam(principal, teamId, reply)
}

function mutationContext (request: FastifyRequest): MutationContext {
  const principal = request.atlasPrincipal
  if (principal === null) throw new Error('atlas: mutation without a principal')
  const headers = request.headers
  const mutationId = headers[MUTATION_ID_HEADER]
  return {
    actor: principal.userId,
    mutationId: typeof mutationId === 'string' ? mutationId : undefined,
    ifMatch: parseIfMatch(headers['if-match'])
  }
}

/** A page size from the query string: a decimal integer from 1 to `max`, nothing else. */
function parseLimit (value: string, max: number): number {
  const limit = /^[1-9][0-9]{0,8}$/.test(value) ? Number(value) : 0
  if (limit < 1 || limit > max) throw new InvalidLimitError(max)
  return limit
}

/** `If-Match: "3"`, `W/"3"`, `3`, lists of them, or `*`. Tags that are not versions match nothing. */
export function parseIfMatch (header: string | undefined): number[] | '*' | undefined {
  if (header === undefined) return undefined
  if (header.trim() === '*') return '*'
  const versions: number[] = []
  for (const raw of header.split(',')) {
    const tag = raw.trim().replace(/^W\//, '').replace(/^"(.*)"$/, '$1')
    if (/^\d{1,15}$/.test(tag)) versions.push(Number(tag))
  }
  return versions
}

export function etagOf (task: Task): string {
  return `"${task.version}"`
}

function sendTask (reply: FastifyReply, result: MutationResult): FastifyReply {
  if (result.replayed) reply.header('idempotency-replayed', 'true')
  return reply.header('etag', etagOf(result.task)).send(result.task)
}

/** Retry-After of a 503 DATABASE_UNAVAILABLE: about what a PostgreSQL restart or fail-over takes. */
const DATABASE_RETRY_AFTER_SECONDS = '2'

function errorHandler (error: FastifyError, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const statusCode = error.statusCode ?? 500
  if (error instanceof DatabaseUnavailableError) {
    // Not a defect here: PostgreSQL is restarting or out of reach. Nothing was applied (or the
    // retry with the same Idempotency-Key finds it applied): the client retries shortly.
    request.log.warn({ err: error.cause ?? error }, 'atlas: database unavailable')
    return sendError(reply.header('retry-after', DATABASE_RETRY_AFTER_SECONDS), error)
  }
  if (statusCode >= 500) {
    request.log.error({ err: error }, 'atlas: task route failed')
    return sendError(reply, new InternalError())
  }
  if (error instanceof PreconditionFailedError) {
    return reply.code(statusCode).header('etag', etagOf(error.current)).send({ ...errorBody(error), task: error.current })
  }
  // Fastify's own 415 message is just the reason phrase.
  const message = statusCode === 415 ? 'Content-Type must be application/json' : error.message
  return sendError(reply, { statusCode, code: error.code ?? FALLBACK_CLIENT_ERROR_CODE, message })
}

/**
 * TypeBoxValidatorCompiler, except that a failed union names its alternatives ("Expected 'todo'
 * or 'in_progress' or 'done'") instead of TypeBox's bare "Expected union value", and that
 * nothing is converted: every params and headers field of these routes is a string already, so
 * TypeBox's per-request Value.Convert would only cost time.
 */
const validatorCompiler: FastifySchemaCompiler<TSchema> = ({ schema }) => {
  const check = TypeCompiler.Compile(schema)
  return (value) => {
    if (check.Check(value)) return { value }
    return { error: [...check.Errors(value)].map((error) => ({
      keyword: ValueErrorType[error.type], schemaPath: '', params: {}, instancePath: error.path, message: describeError(error)
    })) }
  }
}

function describeError (error: ValueError): string {
  const alternatives = error.errors.map((variant) => variant.First()?.message).filter((m): m is string => m !== undefined)
  if (alternatives.length === 0) return error.message
  return alternatives.map((m, i) => i === 0 ? m : m.replace(/^Expected /, '')).join(' or ')
}

export const atlasTaskRoutes = fp(taskRoutesPlugin, { fastify: '5.x', name: NAME, dependencies: ['atlas-repository', 'atlas-auth'] })
export default atlasTaskRoutes
