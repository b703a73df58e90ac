import { Type, type Static } from '@sinclair/typebox'
import { TASK_STATUSES, type TaskStatus } from './db/schema.js'

// Team ids end up in Redis channel names and in the `since` query parameter (as `team:seq`
// pairs separated by commas), so they are kept to a conservative alphabet.
export const TEAM_ID_PATTERN = '^[A-Za-z0-9_-]{1,64}$'
export const TeamId = Type.String({ pattern: TEAM_ID_PATTERN })
const TEAM_ID = new RegExp(TEAM_ID_PATTERN)

/** Whether `value` is a team id the protocol accepts (the same rule as the `TeamId` schema). */
export function isTeamId (value: unknown): value is string {
  return typeof value === 'string' && TEAM_ID.test(value)
}

// A high surrogate not followed by a low one, or a low one not preceded by a high one. JSON
// carries such strings happily, but SQLite stores them as U+FFFD per byte: the stored string
// would no longer equal the one broadcast.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

/** Whether a string is well-formed UTF-16 (no lone surrogate), so it survives storage unchanged. */
export function isWellFormed (value: string): boolean {
  return !LONE_SURROGATE.test(value)
}
export const TaskId = Type.String({ pattern: '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' })

export const TaskStatusSchema = Type.Union(TASK_STATUSES.map((s) => Type.Literal(s)))
const Title = Type.String({ minLength: 1, maxLength: 200 })
const Description = Type.String({ maxLength: 10_000 })
const Assignee = Type.Union([Type.String({ minLength: 1, maxLength: 128 }), Type.Null()])
// A calendar date; the repository also checks it names a real day.
const DueDate = Type.Union([Type.String({ pattern: '^\\d{4}-\\d{2}-\\d{2}$' }), Type.Null()])

// Response schema. Written with `type` arrays and `enum` rather than unions: the serializer
// (fast-json-stringify) handles those directly, while an anyOf makes it run an Ajv validation
// on every reply to pick the branch.
const NullableString = Type.Unsafe<string | null>({ type: ['string', 'null'] })
export const TaskSchema = Type.Object({
  id: Type.String(),
  teamId: Type.String(),
  title: Type.String(),
  description: Type.String(),
  status: Type.Unsafe<TaskStatus>({ type: 'string', enum: [...TASK_STATUSES] }),
  assignee: NullableString,
  dueDate: NullableString,
  version: Type.Integer(),
  createdAt: Type.String(),
  updatedAt: Type.String(),
  updatedBy: Type.String()
}, { $id: 'AtlasTask' })

export const TaskCreateBody = Type.Object({
  title: Title,
  description: Type.Optional(Description),
  status: Type.Optional(TaskStatusSchema),
  assignee: Type.Optional(Assignee),
  dueDate: Type.Optional(DueDate)
}, { additionalProperties: false })

export const TaskPatchBody = Type.Object({
  title: Type.Optional(Title),
  description: Type.Optional(Description),
  status: Type.Optional(TaskStatusSchema),
  assignee: Type.Optional(Assignee),
  dueDate: Type.Optional(DueDate)
}, { additionalProperties: false, minProperties: 1 })

export const TeamParams = Type.Object({ teamId: TeamId }, { additionalProperties: false })
export const TaskParams = Type.Object({ teamId: TeamId, taskId: TaskId }, { additionalProperties: false })

// Strings, as query values arrive: the route parses and bounds `limit` (INVALID_LIMIT) and the
// repository checks `cursor` (INVALID_CURSOR), so each has one code whatever is wrong with it.
export const TaskListQuery = Type.Object({
  limit: Type.Optional(Type.String()),
  cursor: Type.Optional(Type.String())
})

export const TaskListResponse = Type.Object({
  tasks: Type.Array(TaskSchema),
  seq: Type.Integer({ description: 'The team event sequence number this page is current as of' }),
  nextCursor: Type.Unsafe<string | null>({ type: ['string', 'null'], description: 'Cursor of the next page; null on the last page' })
})

export const ErrorResponse = Type.Object({
  statusCode: Type.Integer(),
  code: Type.String(),
  error: Type.String(),
  message: Type.String(),
  task: Type.Optional(TaskSchema)
})

export type TaskCreateBodyT = Static<typeof TaskCreateBody>
export type TaskPatchBodyT = Static<typeof TaskPatchBody>
