// docs/openapi.json: the HTTP task routes as an OpenAPI 3.1 document, written by `npm run docs`
// with @fastify/swagger from the routes' own schemas: a throwaway instance registers the
// swagger plugin, then the suite (in-memory SQLite, an authenticate that admits nobody), and
// asks for the document once ready. What a route schema does not say is added here, in one
// table per route: its summary, the catalogue's error codes it answers (grouped by status),
// and the headers of its answers.
import Fastify, { type FastifySchema } from 'fastify'
import fastifySwagger from '@fastify/swagger'
import { atlasRealtime } from '../plugins/index.js'
import { AtlasTaskRoutesOptionsSchema, MUTATION_ID_HEADER } from '../plugins/task-routes.js'
import { PROTOCOL_VERSION } from '../protocol/constants.js'
import { HTTP_ERRORS, UPGRADE_REFUSAL_ORDER, type HttpErrorCode } from '../protocol/errors.js'
import { ErrorResponse, TaskCreateBody, TaskListResponse, TaskPatchBody, TaskSchema, TaskStatusSchema } from '../protocol/schemas.js'
import { plain, SchemaComponents, type Json, type JsonObject } from './schema-refs.js'

const components = new SchemaComponents({
  Task: TaskSchema,
  TaskStatus: TaskStatusSchema,
  TaskCreateBody,
  TaskPatchBody,
  TaskListResponse,
  ErrorResponse
}, '#/components/schemas/')

const BEARER = 'bearerAuth'

// Headers of the answers (OpenAPI header objects, in @fastify/swagger's response-schema form).
const header = (description: string, type = 'string'): Json => ({ type, description })
const ETAG = { ETag: header('`"<version>"` of the task: pass it as `If-Match`.') }
const REPLAYED = { 'Idempotency-Replayed': header('`true` when this `Idempotency-Key` was already applied to this same request: nothing was written again.') }
const RATE_LIMIT = {
  'X-RateLimit-Limit': header('Mutations the user may make per window.', 'integer'),
  'X-RateLimit-Remaining': header('Mutations left in the window.', 'integer'),
  'X-RateLimit-Reset': header('Seconds until the window ends.', 'integer')
}
const RETRY_AFTER = { 'Retry-After': header('Seconds to wait before retrying.', 'integer') }
const ERROR_HEADERS: Record<number, JsonObject> = {
  401: { 'WWW-Authenticate': header('`Bearer`') },
  412: ETAG,
  429: { ...RETRY_AFTER, ...RATE_LIMIT }
}

/** What the document says of a route that its schema does not. */
interface RouteDoc {
  operationId: string
  summary: string
  description?: string
  /** Success statuses: what the answer is, and its headers. */
  success: Record<number, { description: string, headers?: JsonObject }>
  /** The catalogue's codes this route answers besides those every task route does. */
  errors: HttpErrorCode[]
}

/** Every task route answers these. */
const COMMON_ERRORS: HttpErrorCode[] = ['FST_ERR_VALIDATION', 'BAD_REQUEST', 'UNAUTHORIZED', 'AUTH_RATE_LIMITED', 'FORBIDDEN_TEAM', 'NOT_A_WEBSOCKET_ROUTE', 'INTERNAL', 'DATABASE_UNAVAILABLE']
const BODY_ERRORS: HttpErrorCode[] = ['FST_ERR_CTP_INVALID_JSON_BODY', 'FST_ERR_CTP_EMPTY_JSON_BODY', 'FST_ERR_CTP_BODY_TOO_LARGE', 'FST_ERR_CTP_INVALID_MEDIA_TYPE']
const MUTATION_ERRORS: HttpErrorCode[] = ['RATE_LIMITED', 'MUTATION_ID_CONFLICT']

const options = AtlasTaskRoutesOptionsSchema.properties

const ROUTES: Record<string, RouteDoc> = {
  'GET /teams/:teamId/tasks': {
    operationId: 'listTasks',
    summary: 'List a team\'s tasks, a page at a time',
    description: 'Oldest first (by `createdAt`, then `id`). `seq` is the team\'s last event seq read in the same snapshot as the tasks: apply the events after it. A client that reads every page keeps the first page\'s `seq`.',
    success: { 200: { description: String(TaskListResponse.description) } },
    errors: ['INVALID_LIMIT', 'INVALID_CURSOR']
  },
  'POST /teams/:teamId/tasks': {
    operationId: 'createTask',
    summary: 'Create a task',
    description: 'Broadcast as `task.created` to the team\'s sockets.',
    success: {
      201: { description: 'The task as created.', headers: { ...ETAG, Location: header('The task\'s URL.'), ...RATE_LIMIT } },
      200: { description: 'The task this `Idempotency-Key` created before: nothing was written again.', headers: { ...ETAG, ...REPLAYED, ...RATE_LIMIT } }
    },
    errors: [...BODY_ERRORS, ...MUTATION_ERRORS, 'INVALID_TASK']
  },
  'GET /teams/:teamId/tasks/:taskId': {
    operationId: 'getTask',
    summary: 'Get a task',
    success: { 200: { description: 'The task.', headers: ETAG } },
    errors: ['TASK_NOT_FOUND']
  },
  'PATCH /teams/:teamId/tasks/:taskId': {
    operationId: 'updateTask',
    summary: 'Change some fields of a task',
    description: 'Only the fields given are written (field-level last-write-wins; `null` clears `assignee` or `dueDate`). A change is broadcast as `task.updated`; a patch that changes nothing answers the task as it is, with no new version and no event.',
    success: { 200: { description: 'The whole task after the change.', headers: { ...ETAG, ...REPLAYED, ...RATE_LIMIT } } },
    errors: [...BODY_ERRORS, ...MUTATION_ERRORS, 'INVALID_TASK', 'TASK_NOT_FOUND', 'PRECONDITION_FAILED']
  },
  'DELETE /teams/:teamId/tasks/:taskId': {
    operationId: 'deleteTask',
    summary: 'Delete a task',
    description: 'Broadcast as `task.deleted`. Takes no body: do not send `Content-Type: application/json` with an empty one.',
    success: { 204: { description: 'Deleted.', headers: { ...REPLAYED, ...RATE_LIMIT } } },
    errors: [...MUTATION_ERRORS, 'FST_ERR_CTP_EMPTY_JSON_BODY', 'TASK_NOT_FOUND', 'PRECONDITION_FAILED']
  }
}

/** Descriptions of request parameters the route schemas leave bare or terse. */
const PARAMETERS: Record<string, string> = {
  limit: `Page size: an integer from 1 to \`maxPageSize\` (default ${String(options.maxPageSize.default)}); without it, \`pageSize\` tasks (default ${String(options.pageSize.default)}).`,
  cursor: 'The previous page\'s `nextCursor`: the tasks after that page\'s last one. Opaque: do not build or parse it.',
  [MUTATION_ID_HEADER]: 'A client-chosen mutation id: the request is applied at most once per key (a retry answers the first result), and the event carries it as `mutationId`.',
  'if-match': 'Apply only if the task is at one of these versions: `"3"`, `W/"3"`, `3`, a comma-separated list of those, or `*` (any). At most 200 characters.'
}

function describeParameters (schema: unknown): Json {
  const object = plain(schema) as JsonObject & { properties: Record<string, JsonObject> }
  for (const [name, property] of Object.entries(object.properties)) {
    const description = PARAMETERS[name]
    if (description !== undefined) property.description = description
  }
  return components.refer(object)
}

/** An error answer: the error body, its `code` narrowed to the catalogue's codes of that status. */
function errorResponse (statusCode: number, codes: HttpErrorCode[]): Json {
  return {
    'x-response-description': codes.map((code) => `- \`${code}\`: ${HTTP_ERRORS[code].cause}`).join('\n'),
    ...(ERROR_HEADERS[statusCode] === undefined ? {} : { headers: ERROR_HEADERS[statusCode] }),
    allOf: [
      { $ref: '#/components/schemas/ErrorResponse' },
      { type: 'object', properties: { code: { enum: codes } } }
    ]
  }
}

function successResponse (schema: unknown, { description, headers }: RouteDoc['success'][number]): Json {
  const body = components.reference(schema) as JsonObject
  // Beside a $ref, @fastify/swagger keeps only the plain `description`; elsewhere it would also
  // stay in the body's schema, where x-response-description does not.
  const said: JsonObject = body.$ref === undefined ? { 'x-response-description': description } : { description }
  return { ...body, ...said, ...(headers === undefined ? {} : { headers }) }
}

function documented (key: string, schema: FastifySchema): FastifySchema {
  const doc = ROUTES[key]
  if (doc === undefined) throw new Error(`scripts/openapi.ts: the route ${key} is not described in ROUTES`)
  const declared = (schema.response ?? {}) as Record<string, unknown>
  const byStatus = new Map<number, HttpErrorCode[]>()
  for (const code of [...COMMON_ERRORS, ...doc.errors]) {
    const { statusCode } = HTTP_ERRORS[code]
    byStatus.set(statusCode, [...byStatus.get(statusCode) ?? [], code])
  }
  const response: Record<string, Json> = {}
  for (const [status, answer] of Object.entries(declared)) {
    const statusCode = Number(status)
    const success = doc.success[statusCode]
    if (success !== undefined) response[status] = successResponse(answer, success)
    else if (!byStatus.has(statusCode)) throw new Error(`scripts/openapi.ts: ${key} declares ${status}, which neither its success answers nor its error codes explain`)
  }
  for (const status of Object.keys(doc.success)) {
    if (declared[status] === undefined) throw new Error(`scripts/openapi.ts: ${key} has no response schema for ${status}`)
  }
  for (const [statusCode, codes] of [...byStatus].sort(([a], [b]) => a - b)) response[statusCode] = errorResponse(statusCode, codes)

  return {
    operationId: doc.operationId,
    summary: doc.summary,
    ...(doc.description === undefined ? {} : { description: doc.description }),
    tags: ['tasks'],
    params: components.refer(schema.params),
    ...(schema.querystring === undefined ? {} : { querystring: describeParameters(schema.querystring) }),
    ...(schema.headers === undefined ? {} : { headers: describeParameters(schema.headers) }),
    ...(schema.body === undefined ? {} : { body: components.reference(schema.body) }),
    response
  }
}

/** Every code of the catalogue is in a document: on a route here, or among the upgrade's refusals (asyncapi.json). */
function checkCoverage (): void {
  const documentedCodes = new Set<string>([...COMMON_ERRORS, ...Object.values(ROUTES).flatMap((route) => route.errors), ...UPGRADE_REFUSAL_ORDER])
  const missing = Object.keys(HTTP_ERRORS).filter((code) => !documentedCodes.has(code))
  if (missing.length > 0) throw new Error(`scripts/openapi.ts: error codes in no document: ${missing.join(', ')} (add them to a route in ROUTES)`)
}

export async function openApiDocument (): Promise<Json> {
  checkCoverage()
  const app = Fastify({ logger: false })
  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Atlas Realtime HTTP task API',
        version: String(PROTOCOL_VERSION),
        description: [
          `The task routes of Atlas Realtime, version ${PROTOCOL_VERSION} of its protocol. Every change made through them is written with an event in the team's log and delivered to the team's WebSocket clients: asyncapi.json describes that channel, docs/protocol.md has the prose.`,
          'Paths are shown without a prefix; a host may mount the routes under one (`/api/teams/...`). Bodies are JSON, validated strictly: unknown members are refused and nothing is coerced. Every error answer has the same body; its `code` is one of those listed under each status.',
          'Generated by `npm run docs` from the routes\' schemas (@fastify/swagger) and the error catalogue.'
        ].join('\n\n'),
        license: { name: 'MIT', identifier: 'MIT' }
      },
      servers: [{ url: 'http://localhost:3000', description: 'The example server (`npm start`)' }],
      tags: [{ name: 'tasks', description: 'A team\'s tasks. Membership of the team is checked before anything else about the request.' }],
      components: {
        securitySchemes: {
          [BEARER]: {
            type: 'http',
            scheme: 'bearer',
            bearerFormat: 'JWT',
            description: 'What a credential is, is the host\'s choice (its `authenticate`); the example takes an HS256 JWT with `sub`, `teams` and an `exp` at most 24 h after `iat`. `access_token` in the query is accepted only on the WebSocket upgrade.'
          }
        },
        schemas: components.components() as Record<string, never>
      },
      security: [{ [BEARER]: [] }]
    },
    transform: ({ schema, url, route }) => {
      // The WebSocket endpoint is asyncapi.json's.
      if ((route as { websocket?: boolean }).websocket === true) return { schema: { ...schema, hide: true }, url }
      return { schema: documented(`${String(route.method)} ${url}`, schema), url }
    }
  })
  await app.register(atlasRealtime, {
    authenticate: () => null,
    database: { databasePath: ':memory:', checkpointIntervalMs: 0 }
  })
  try {
    await app.ready()
    return plain(app.swagger())
  } finally {
    await app.close()
  }
}
