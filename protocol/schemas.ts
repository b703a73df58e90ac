// The wire contract as TypeBox schemas: the task, every frame in both directions and the HTTP
// bodies. The TypeScript types are derived from them (Static), so the server, the SDK and the
// generated documents cannot disagree. Only the server loads this file at run time; the SDK
// imports it with `import type`, so a browser never needs TypeBox.
import { Type, type Static, type TSchema, type TString, type TUnsafe } from '@sinclair/typebox'
import {
  DUE_DATE_PATTERN, ErrorCode, Limits, MUTATION_ID_PATTERN, PROTOCOL_VERSION, RESYNC_REASONS, TASK_FIELDS, TASK_ID_PATTERN,
  TASK_STATUSES, TEAM_ID_PATTERN, UNSUBSCRIBE_REASONS, type TaskStatus
} from './constants.js'

export const TeamId = Type.String({ pattern: TEAM_ID_PATTERN, description: 'A team id' })
export const TaskId = Type.String({ pattern: TASK_ID_PATTERN, description: 'A task id (lowercase UUID)' })

// ---------------------------------------------------------------------------------------------
// The task

export const TaskStatusSchema = Type.Union(TASK_STATUSES.map((s) => Type.Literal(s)), { description: 'A task status' })
const Title = Type.String({ minLength: 1, maxLength: Limits.TITLE_MAX, description: 'Title, 1-200 characters' })
const Description = Type.String({ maxLength: Limits.DESCRIPTION_MAX, description: 'Description, up to 10,000 characters' })
const Assignee = Type.Union([Type.String({ minLength: 1, maxLength: Limits.ASSIGNEE_MAX }), Type.Null()], { description: 'User id of the assignee, or null' })
const DueDate = Type.Union([Type.String({ pattern: DUE_DATE_PATTERN }), Type.Null()], { description: 'A calendar date YYYY-MM-DD, or null' })

// The task as the API and the events show it. Written with `type` arrays and `enum` rather than
// unions: the serializer (fast-json-stringify) handles those directly, while an anyOf makes it
// run an Ajv validation on every reply to pick the branch. (TypeBox's compiler does not know
// these Unsafe kinds; test/helpers/ws-client.ts registers a checker for them.)
const NullableString = (description: string): TUnsafe<string | null> =>
  Type.Unsafe<string | null>({ type: ['string', 'null'], description })
const Timestamp = (description: string): TString => Type.String({ description: `${description} (ISO 8601, UTC, ms)` })

export const TaskSchema = Type.Object({
  id: Type.String({ description: 'Lowercase UUID, assigned by the server' }),
  teamId: Type.String({ description: 'Owning team' }),
  title: Type.String({ description: '1-200 characters' }),
  description: Type.String({ description: '0-10,000 characters; "" when not given' }),
  status: Type.Unsafe<TaskStatus>({ type: 'string', enum: [...TASK_STATUSES], description: 'The task status' }),
  assignee: NullableString('1-128 characters, or null'),
  dueDate: NullableString('A calendar date YYYY-MM-DD, or null'),
  version: Type.Integer({ minimum: 1, description: '1 at creation, +1 on every change; its ETag is "<version>"' }),
  createdAt: Timestamp('When the task was created'),
  updatedAt: Timestamp('When the task last changed'),
  updatedBy: Type.String({ description: 'User id of the last actor' })
}, { $id: 'AtlasTask', additionalProperties: false, description: 'A task as the HTTP API and the events show it' })
export type Task = Static<typeof TaskSchema>

// ---------------------------------------------------------------------------------------------
// HTTP bodies, parameters and answers

export const TaskCreateBody = Type.Object({
  title: Title,
  description: Type.Optional(Description),
  status: Type.Optional(TaskStatusSchema),
  assignee: Type.Optional(Assignee),
  dueDate: Type.Optional(DueDate)
}, { additionalProperties: false, description: 'A new task' })
export type TaskInput = Static<typeof TaskCreateBody>

export const TaskPatchBody = Type.Object({
  title: Type.Optional(Title),
  description: Type.Optional(Description),
  status: Type.Optional(TaskStatusSchema),
  assignee: Type.Optional(Assignee),
  dueDate: Type.Optional(DueDate)
}, { additionalProperties: false, minProperties: 1, description: 'The fields to change (at least one)' })
export type TaskPatch = Static<typeof TaskPatchBody>

export const TeamParams = Type.Object({ teamId: TeamId }, { additionalProperties: false })
export const TaskParams = Type.Object({ teamId: TeamId, taskId: TaskId }, { additionalProperties: false })

// Strings, as query values arrive: the route parses and bounds `limit` (INVALID_LIMIT) and the
// repository checks `cursor` (INVALID_CURSOR), so each has one code whatever is wrong with it.
export const TaskListQuery = Type.Object({
  limit: Type.Optional(Type.String({ description: 'Page size' })),
  cursor: Type.Optional(Type.String({ description: 'The previous page\'s nextCursor' }))
})

export const TaskListResponse = Type.Object({
  tasks: Type.Array(TaskSchema),
  seq: Type.Integer({ description: 'The team event sequence number this page is current as of' }),
  nextCursor: Type.Unsafe<string | null>({ type: ['string', 'null'], description: 'Cursor of the next page; null on the last page' })
}, { description: 'A page of a team\'s tasks and the seq it is current as of' })
export type TaskListResponse = Static<typeof TaskListResponse>

export const ErrorResponse = Type.Object({
  statusCode: Type.Integer(),
  code: Type.String({ description: 'Machine-readable error code' }),
  error: Type.String({ description: 'HTTP status text' }),
  message: Type.String({ description: 'Human-readable detail' }),
  task: Type.Optional(TaskSchema)
}, { description: 'The body of every error answer' })
export type ErrorResponse = Static<typeof ErrorResponse>

/** The Idempotency-Key header's value. */
export const MutationId = Type.String({ pattern: MUTATION_ID_PATTERN, description: 'Client-chosen mutation id (Idempotency-Key)' })

// ---------------------------------------------------------------------------------------------
// Client -> server frames

const Seq = Type.Integer({ minimum: 0 })
const Teams = Type.Array(TeamId, { minItems: 1, maxItems: Limits.TEAMS_PER_FRAME_MAX, uniqueItems: true, description: '1 to 100 distinct team ids' })
const PingId = Type.Union([Type.String({ maxLength: Limits.PING_ID_MAX }), Type.Integer()], { description: 'Echoed in the pong' })

export const SubscribeFrame = Type.Object({
  type: Type.Literal('subscribe'),
  teams: Teams,
  since: Type.Optional(Type.Record(Type.String({ pattern: TEAM_ID_PATTERN }), Seq, {
    description: 'Team id -> last seq held: resume after it; entries for teams not in `teams` are ignored'
  }))
}, { additionalProperties: false, description: 'Start receiving teams\' events, optionally resuming' })

export const UnsubscribeFrame = Type.Object({
  type: Type.Literal('unsubscribe'),
  teams: Teams
}, { additionalProperties: false, description: 'Stop receiving teams\' events; answered with one `unsubscribed` per team' })

export const PingFrame = Type.Object({
  type: Type.Literal('ping'),
  id: Type.Optional(PingId)
}, { additionalProperties: false, description: 'Application-level liveness check; answered with `pong`' })

export const RefreshFrame = Type.Object({
  type: Type.Literal('refresh'),
  token: Type.String({ minLength: 1, maxLength: Limits.REFRESH_TOKEN_MAX, description: 'A fresh credential for the same user' })
}, {
  additionalProperties: false,
  description: 'Replaces the connection\'s credential without reconnecting: answered with `refreshed`; a refused one closes the socket with 4001'
})

export const ClientFrame = Type.Union([SubscribeFrame, UnsubscribeFrame, PingFrame, RefreshFrame], { description: 'A frame a client sends' })
export type SubscribeFrame = Static<typeof SubscribeFrame>
export type UnsubscribeFrame = Static<typeof UnsubscribeFrame>
export type PingFrame = Static<typeof PingFrame>
export type RefreshFrame = Static<typeof RefreshFrame>
export type ClientFrame = Static<typeof ClientFrame>

/** Each client frame's schema by its `type`. */
export const clientFrameSchemas = {
  subscribe: SubscribeFrame,
  unsubscribe: UnsubscribeFrame,
  ping: PingFrame,
  refresh: RefreshFrame
} as const satisfies Record<ClientFrame['type'], TSchema>

// ---------------------------------------------------------------------------------------------
// Server -> client frames

export const WelcomeFrame = Type.Object({
  type: Type.Literal('welcome'),
  protocol: Type.Literal(PROTOCOL_VERSION, { description: 'Protocol version; refuse to go on with an unknown one' }),
  userId: Type.String({ description: 'The authenticated user' }),
  teams: Type.Array(Type.String(), { description: 'All teams of the principal: the teams this connection may subscribe to' }),
  heartbeatMs: Type.Integer({ minimum: 1, description: 'Interval of the server\'s protocol pings, in ms' }),
  expiresAt: Type.Optional(Type.Integer({ minimum: 0, description: 'When the credential expires (epoch ms; absent: the host did not say): refresh before it, or the socket is closed with 4001' }))
}, { additionalProperties: false, description: 'First frame of every connection' })

export const RefreshedFrame = Type.Object({
  type: Type.Literal('refreshed'),
  teams: Type.Array(Type.String(), { description: 'All teams of the principal now: subscriptions to teams no longer listed were ended (`unsubscribed` with reason `revoked`), new ones may be subscribed' }),
  expiresAt: Type.Optional(Type.Integer({ minimum: 0, description: 'When the new credential expires (epoch ms)' }))
}, { additionalProperties: false, description: 'Answer to `refresh`: the new credential is the connection\'s' })

export const SubscribedFrame = Type.Object({
  type: Type.Literal('subscribed'),
  teamId: Type.String({ description: 'The team' }),
  seq: Type.Integer({ minimum: 0, description: 'Events of the team above this seq follow on this connection, none at or below it' }),
  replayed: Type.Integer({ minimum: 0, description: 'Events replayed from the log just before this frame' })
}, { additionalProperties: false, description: 'A subscription is live (after any replayed events)' })

export const ResyncFrame = Type.Object({
  type: Type.Literal('resync'),
  teamId: Type.String({ description: 'The team' }),
  seq: Type.Integer({ minimum: 0, description: 'Events after this seq follow on this connection' }),
  reason: Type.Union(RESYNC_REASONS.map((r) => Type.Literal(r)), {
    description: 'Why; other values may be added: treat any reason as "refetch"'
  })
}, { additionalProperties: false, description: 'The client must refetch the team\'s task list; the subscription is live nonetheless' })

export const UnsubscribedFrame = Type.Object({
  type: Type.Literal('unsubscribed'),
  teamId: Type.String({ description: 'The team' }),
  reason: Type.Optional(Type.Union(UNSUBSCRIBE_REASONS.map((r) => Type.Literal(r)), {
    description: 'Absent: the answer to the client\'s `unsubscribe`. `revoked`: the principal lost the team (a refresh without it, or the host revoked the membership); subscribing to it again is refused'
  }))
}, { additionalProperties: false, description: 'A subscription ended: the answer to `unsubscribe` (one per team listed), or the server ended it (`reason`)' })

export const ErrorFrame = Type.Object({
  type: Type.Literal('error'),
  code: Type.Union(Object.values(ErrorCode).map((c) => Type.Literal(c)), { description: 'What was refused' }),
  message: Type.String({ description: 'Human-readable detail, for logs; do not parse it' }),
  teamId: Type.Optional(Type.String({ description: 'The team the refusal is about (`forbidden_team`: one frame per team refused)' }))
}, { additionalProperties: false, description: 'A client frame was refused; the connection carries on' })

export const PongFrame = Type.Object({
  type: Type.Literal('pong'),
  id: Type.Optional(PingId)
}, { additionalProperties: false, description: 'Answer to `ping`, with its `id` unchanged (absent when the ping had none)' })

const eventEnvelope = {
  teamId: Type.String({ description: 'The team' }),
  seq: Type.Integer({ minimum: 1, description: 'The event\'s position in the team\'s log' }),
  taskId: Type.String({ description: 'The task\'s id' }),
  actor: Type.String({ description: 'User id of the principal who made the change' }),
  at: Timestamp('When the change was committed'),
  mutationId: NullableString('The Idempotency-Key the HTTP request carried, or null')
}

export const TaskCreatedEvent = Type.Object({
  type: Type.Literal('task.created'),
  ...eventEnvelope,
  task: TaskSchema
}, { additionalProperties: false, description: 'A task was created' })

export const TaskUpdatedEvent = Type.Object({
  type: Type.Literal('task.updated'),
  ...eventEnvelope,
  task: TaskSchema,
  changes: Type.Array(Type.Union(TASK_FIELDS.map((f) => Type.Literal(f))), {
    minItems: 1, uniqueItems: true, description: 'The fields whose value changed, in the order of TASK_FIELDS'
  })
}, { additionalProperties: false, description: 'A task changed; `task` is the whole task after the change' })

export const TaskDeletedEvent = Type.Object({
  type: Type.Literal('task.deleted'),
  ...eventEnvelope,
  version: Type.Integer({ minimum: 1, description: 'The version the task had when it was deleted' })
}, { additionalProperties: false, description: 'A task was deleted' })

export const TaskEvent = Type.Union([TaskCreatedEvent, TaskUpdatedEvent, TaskDeletedEvent], { description: 'A team\'s event' })
export const ServerControlFrame = Type.Union([WelcomeFrame, SubscribedFrame, ResyncFrame, UnsubscribedFrame, RefreshedFrame, ErrorFrame, PongFrame], {
  description: 'A frame the server sends that is not a team\'s event'
})
export const ServerFrame = Type.Union([ServerControlFrame, TaskEvent], { description: 'A frame the server sends' })

export type WelcomeFrame = Static<typeof WelcomeFrame>
export type SubscribedFrame = Static<typeof SubscribedFrame>
export type ResyncFrame = Static<typeof ResyncFrame>
export type UnsubscribedFrame = Static<typeof UnsubscribedFrame>
export type RefreshedFrame = Static<typeof RefreshedFrame>
export type ErrorFrame = Static<typeof ErrorFrame>
export type PongFrame = Static<typeof PongFrame>
export type TaskCreatedEvent = Static<typeof TaskCreatedEvent>
export type TaskUpdatedEvent = Static<typeof TaskUpdatedEvent>
export type TaskDeletedEvent = Static<typeof TaskDeletedEvent>
export type TaskEvent = Static<typeof TaskEvent>
export type TaskEventType = TaskEvent['type']
export type ServerControlFrame = Static<typeof ServerControlFrame>
export type ServerFrame = Static<typeof ServerFrame>

/** Each server frame's schema by its `type`. */
export const serverFrameSchemas = {
  welcome: WelcomeFrame,
  subscribed: SubscribedFrame,
  resync: ResyncFrame,
  unsubscribed: UnsubscribedFrame,
  refreshed: RefreshedFrame,
  error: ErrorFrame,
  pong: PongFrame,
  'task.created': TaskCreatedEvent,
  'task.updated': TaskUpdatedEvent,
  'task.deleted': TaskDeletedEvent
} as const satisfies Record<ServerFrame['type'], TSchema>

