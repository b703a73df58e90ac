import { pgTable, text, integer, bigint, index, primaryKey } from 'drizzle-orm/pg-core'
import { sql } from 'drizzle-orm'
import { TASK_STATUSES } from '../../protocol/constants.js'
import type { Assert, Same, TaskRow as TaskRecord } from '../task-records.js'

// The PostgreSQL twin of schema.ts: the same tables, columns, names and indexes, so the two
// repositories share their row helpers (task-records.ts) and the docs describe one schema.
// Why each table exists is told in schema.ts. Differences, all hidden by the repository:
// epoch-ms timestamps are bigint (a 4-byte integer cannot hold them), read back as JS numbers
// (exact: epoch ms stay below 2^53 for another 285,000 years); `published`
// stays an integer 0/1 as in SQLite, so the partial outbox index reads the same.

export const tasks = pgTable('tasks', {
  id: text('id').primaryKey(),
  teamId: text('team_id').notNull(),
  title: text('title').notNull(),
  description: text('description').notNull().default(''),
  status: text('status', { enum: TASK_STATUSES }).notNull().default('todo'),
  assignee: text('assignee'),
  dueDate: text('due_date'),
  version: integer('version').notNull(),
  createdAt: bigint('created_at', { mode: 'number' }).notNull(),
  updatedAt: bigint('updated_at', { mode: 'number' }).notNull(),
  updatedBy: text('updated_by').notNull()
}, (t) => [
  index('tasks_team_created_id_idx').on(t.teamId, t.createdAt, t.id)
])

export const teamSequences = pgTable('team_sequences', {
  teamId: text('team_id').primaryKey(),
  seq: integer('seq').notNull(),
  prunedThrough: integer('pruned_through').notNull().default(0)
})

export const events = pgTable('events', {
  teamId: text('team_id').notNull(),
  seq: integer('seq').notNull(),
  type: text('type').notNull(),
  taskId: text('task_id').notNull(),
  payload: text('payload').notNull(),
  createdAt: bigint('created_at', { mode: 'number' }).notNull(),
  published: integer('published').notNull().default(0)
}, (t) => [
  primaryKey({ columns: [t.teamId, t.seq] }),
  index('events_unpublished_idx').on(t.teamId, t.seq).where(sql`published = 0`),
  index('events_created_idx').on(t.createdAt)
])

export const mutations = pgTable('mutations', {
  teamId: text('team_id').notNull(),
  actor: text('actor').notNull(),
  mutationId: text('mutation_id').notNull(),
  fingerprint: text('fingerprint').notNull(),
  result: text('result').notNull(),
  createdAt: bigint('created_at', { mode: 'number' }).notNull()
}, (t) => [
  primaryKey({ columns: [t.teamId, t.actor, t.mutationId] }),
  index('mutations_created_idx').on(t.createdAt)
])

export const revocations = pgTable('revocations', {
  // An identity hands ids out in call order, not commit order: the repository's revoke takes a
  // lock so that they also become visible in id order (revocationsAfter reads `id > last`).
  id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
  userId: text('user_id').notNull(),
  teamId: text('team_id'),
  createdAt: bigint('created_at', { mode: 'number' }).notNull()
}, (t) => [
  index('revocations_created_idx').on(t.createdAt)
])

export type TaskRow = typeof tasks.$inferSelect

// The row helpers (task-records.ts) are typed on their TaskRow: fail the build here, not there,
// if this table's row ever stops matching it.
export type TaskRowAgrees = Assert<Same<TaskRow, TaskRecord>>
