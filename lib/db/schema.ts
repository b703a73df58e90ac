import { sqliteTable, text, integer, index, primaryKey } from 'drizzle-orm/sqlite-core'
import { sql } from 'drizzle-orm'
import { TASK_STATUSES } from '../../protocol/constants.js'
import type { Assert, Same, TaskRow as TaskRecord } from '../task-records.js'

export const tasks = sqliteTable('tasks', {
  id: text('id').primaryKey(),
  teamId: text('team_id').notNull(),
  title: text('title').notNull(),
  description: text('description').notNull().default(''),
  status: text('status', { enum: TASK_STATUSES }).notNull().default('todo'),
  assignee: text('assignee'),
  dueDate: text('due_date'),
  version: integer('version').notNull(),
  createdAt: integer('created_at').notNull(),
  updatedAt: integer('updated_at').notNull(),
  updatedBy: text('updated_by').notNull()
}, (t) => [
  // The list's order and its keyset pagination: (team, createdAt, id) answers "the next page"
  // from the index alone, ties on createdAt included.
  index('tasks_team_created_id_idx').on(t.teamId, t.createdAt, t.id)
])

// One row per team: the last sequence number handed out and how far the log has been pruned.
// Keeping the counter in its own row (rather than MAX(seq) over events) means pruning can never
// make a sequence number come back.
export const teamSequences = sqliteTable('team_sequences', {
  teamId: text('team_id').primaryKey(),
  seq: integer('seq').notNull(),
  prunedThrough: integer('pruned_through').notNull().default(0)
})

// The team's event log. It is at once the outbox (published = 0 until a broker accepted it)
// and the history clients resume from. `payload` is the event frame exactly as it goes on the
// wire, serialised once at commit.
export const events = sqliteTable('events', {
  teamId: text('team_id').notNull(),
  seq: integer('seq').notNull(),
  type: text('type').notNull(),
  taskId: text('task_id').notNull(),
  payload: text('payload').notNull(),
  createdAt: integer('created_at').notNull(),
  published: integer('published').notNull().default(0)
}, (t) => [
  primaryKey({ columns: [t.teamId, t.seq] }),
  index('events_unpublished_idx').on(t.teamId, t.seq).where(sql`published = 0`),
  index('events_created_idx').on(t.createdAt)
])

// Durable idempotency: a client mutation id seen once, with the response it produced.
export const mutations = sqliteTable('mutations', {
  teamId: text('team_id').notNull(),
  actor: text('actor').notNull(),
  mutationId: text('mutation_id').notNull(),
  fingerprint: text('fingerprint').notNull(),
  result: text('result').notNull(),
  createdAt: integer('created_at').notNull()
}, (t) => [
  primaryKey({ columns: [t.teamId, t.actor, t.mutationId] }),
  index('mutations_created_idx').on(t.createdAt)
])

export type TaskRow = typeof tasks.$inferSelect
// The row helpers (task-records.ts) are typed on their TaskRow: fail the build here if this
// table's row ever stops matching it.
export type TaskRowAgrees = Assert<Same<TaskRow, TaskRecord>>

// Revocations the host made (`atlasRevoke`): a user entirely (team_id null), or one membership.
// The database, not the broker, is the authority: a broker message only says "read revocations
// after the last you applied", so nobody who can publish on the broker can revoke anyone, and
// an instance that missed the message (Redis down) catches up when its subscription returns.
export const revocations = sqliteTable('revocations', {
  id: integer('id').primaryKey({ autoIncrement: true }),
  userId: text('user_id').notNull(),
  teamId: text('team_id'),
  createdAt: integer('created_at').notNull()
}, (t) => [
  index('revocations_created_idx').on(t.createdAt)
])
