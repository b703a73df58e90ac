import t, { type Test } from 'tap'
import Database from 'better-sqlite3'
import pg from 'pg'
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { packageMigrationsFolder } from '../lib/db/open.js'
import { InvalidTaskError, PreconditionFailedError, TaskNotFoundError } from '../lib/errors.js'
import type { TaskRepository } from '../lib/repository.js'
import type { LoggedEvent } from '../lib/types.js'
import { eachBackend, openTestRepository, testDatabase, type Backend, type DatabaseConfig } from './helpers/backends.js'

const alice = { actor: 'alice' }

/** A repository on a fresh database of this test on `backend`, closed when the test ends. */
async function openRepository (t: Test, backend: Backend, options: { now?: () => number } = {}): Promise<{ repository: TaskRepository, database: DatabaseConfig }> {
  const database = await testDatabase(t, backend)
  return { repository: (await openTestRepository(t, database, options)).repository, database }
}

/** A team's whole event log, parsed. */
async function eventsOf (repository: TaskRepository, teamId: string): Promise<any[]> {
  return (await repository.eventsAfter(teamId, 0, 10_000)).map((e) => JSON.parse(e.payload))
}

/** Everything stored for the given teams: tasks, list seq and raw event log. */
async function stored (repository: TaskRepository, teams = ['red', 'blue']): Promise<unknown> {
  return await Promise.all(teams.map(async (team) => ({ list: await repository.list(team), log: await repository.eventsAfter(team, 0, 10_000) })))
}

async function thrown (fn: () => unknown): Promise<unknown> {
  try {
    await fn()
  } catch (err) {
    return err
  }
  return undefined
}

interface Observer {
  /** Whether a connection holds a transaction open (SQLite: a write transaction, the kind every mutation opens). */
  transactionOpen (): boolean
  /** The event as stored, if committed. */
  committed (teamId: string, seq: number): LoggedEvent | undefined
}

/**
 * Looks at the database from another connection, synchronously: this process runs nothing else
 * meanwhile, so a transaction it finds open or an event it finds committed was so when it was
 * called. SQLite: a connection of its own that never waits for a lock; PostgreSQL: psql, in a
 * child process this one waits for.
 */
function synchronousObserver (t: Test, database: DatabaseConfig): Observer {
  if (database.databaseUrl !== undefined) {
    const url = database.databaseUrl
    const query = (statement: string): string => execFileSync('psql', ['-X', '-q', '-t', '-A', '-v', 'ON_ERROR_STOP=1', '-d', url, '-c', statement], { encoding: 'utf8' }).trim()
    return {
      transactionOpen: () => Number(query("select count(*) from pg_stat_activity where datname = current_database() and state like 'idle in transaction%'")) > 0,
      committed: (teamId, seq) => {
        if (!/^[a-z]+$/.test(teamId) || !Number.isInteger(seq)) throw new TypeError('plain team ids and seqs only')
        const row = query(`select json_build_object('teamId', team_id, 'seq', seq, 'payload', payload) from events where team_id = '${teamId}' and seq = ${seq}`)
        return row === '' ? undefined : JSON.parse(row) as LoggedEvent
      }
    }
  }
  const sqlite = new Database(database.databasePath, { timeout: 0 })
  t.teardown(() => { sqlite.close() })
  return {
    transactionOpen: () => {
      try {
        sqlite.exec('BEGIN IMMEDIATE')
        sqlite.exec('ROLLBACK')
        return false
      } catch (err) {
        if ((err as { code?: string }).code === 'SQLITE_BUSY') return true
        throw err
      }
    },
    committed: (teamId, seq) => sqlite.prepare('SELECT team_id AS teamId, seq, payload FROM events WHERE team_id = ? AND seq = ?').get(teamId, seq) as LoggedEvent | undefined
  }
}

/** How many migrations the database recorded as applied, and how many its dialect's journal lists. */
async function migrationCounts (database: DatabaseConfig): Promise<{ applied: number, journal: number }> {
  const journalOf = (folder: 'drizzle' | 'drizzle-pg'): number => (JSON.parse(readFileSync(join(packageMigrationsFolder(folder), 'meta/_journal.json'), 'utf8')) as { entries: unknown[] }).entries.length
  if (database.databaseUrl !== undefined) {
    const client = new pg.Client({ connectionString: database.databaseUrl })
    await client.connect()
    try {
      const { rows } = await client.query<{ n: number }>('select count(*)::int as n from drizzle.__drizzle_migrations')
      return { applied: rows[0].n, journal: journalOf('drizzle-pg') }
    } finally {
      await client.end()
    }
  }
  const sqlite = new Database(database.databasePath, { readonly: true })
  try {
    return { applied: (sqlite.prepare('SELECT count(*) AS n FROM __drizzle_migrations').get() as { n: number }).n, journal: journalOf('drizzle') }
  } finally {
    sqlite.close()
  }
}

eachBackend(t, 'create, update and delete each append exactly one event; seq runs 1, 2, 3 per team with no gaps', async (t, backend) => {
  const { repository } = await openRepository(t, backend)
  const red = (await repository.create('red', { title: 'a' }, alice)).task
  const blue = (await repository.create('blue', { title: 'b' }, alice)).task
  await repository.update('red', red.id, { status: 'done' }, alice)
  await repository.update('blue', blue.id, { title: 'b2' }, alice)
  await repository.delete('red', red.id, alice)
  await repository.create('red', { title: 'c' }, alice)

  t.same((await eventsOf(repository, 'red')).map((e) => [e.seq, e.type]), [[1, 'task.created'], [2, 'task.updated'], [3, 'task.deleted'], [4, 'task.created']])
  t.same((await eventsOf(repository, 'blue')).map((e) => [e.seq, e.type]), [[1, 'task.created'], [2, 'task.updated']])
  t.same((await repository.eventsAfter('red', 0, 100)).map((e) => e.seq), (await eventsOf(repository, 'red')).map((e) => e.seq), 'log seq column matches the payload')
  t.equal(await repository.headSeq('red'), 4)
  t.equal(await repository.headSeq('blue'), 2)
  t.equal(await repository.headSeq('green'), 0)
})

eachBackend(t, 'each event payload carries type, team, seq, task id, the task after the change, changes, actor, time and mutation id', async (t, backend) => {
  let clock = Date.UTC(2026, 0, 5, 9, 0, 0)
  const { repository } = await openRepository(t, backend, { now: () => clock })
  const at0 = new Date(clock).toISOString()
  const created = await repository.create('red', { title: 'write tests', assignee: 'bob' }, { actor: 'alice', mutationId: 'm-create' })
  const id = created.task.id
  t.same(created.task, {
    id, teamId: 'red', title: 'write tests', description: '', status: 'todo', assignee: 'bob', dueDate: null,
    version: 1, createdAt: at0, updatedAt: at0, updatedBy: 'alice'
  })

  clock += 60_000
  const at1 = new Date(clock).toISOString()
  const updated = await repository.update('red', id, { title: 'write more tests', dueDate: '2026-03-01', assignee: 'bob' }, { actor: 'carol', mutationId: 'm-update' })
  clock += 60_000
  const at2 = new Date(clock).toISOString()
  await repository.delete('red', id, { actor: 'dave' })

  const [createdEvent, updatedEvent, deletedEvent] = (await eventsOf(repository, 'red'))
  t.same(createdEvent, { type: 'task.created', teamId: 'red', seq: 1, taskId: id, actor: 'alice', at: at0, mutationId: 'm-create', task: created.task })
  t.same(updatedEvent, {
    type: 'task.updated',
    teamId: 'red',
    seq: 2,
    taskId: id,
    actor: 'carol',
    at: at1,
    mutationId: 'm-update',
    changes: ['title', 'dueDate'],
    task: { ...created.task, title: 'write more tests', dueDate: '2026-03-01', version: 2, updatedAt: at1, updatedBy: 'carol' }
  })
  t.same(updatedEvent.task, updated.task, 'the event carries the task exactly as update() returned it')
  t.same(deletedEvent, { type: 'task.deleted', teamId: 'red', seq: 3, taskId: id, actor: 'dave', at: at2, mutationId: null, version: 2 })
  t.same(Object.keys(createdEvent).slice(0, 3), ['type', 'teamId', 'seq'], 'type, team and seq lead the JSON')
  t.same(JSON.parse(JSON.stringify(updated.event)), updatedEvent, 'the returned event is the stored one')
})

eachBackend(t, 'a failing mutation changes nothing, appends no event and notifies no listener', async (t, backend) => {
  const { repository } = await openRepository(t, backend)
  const task = (await repository.create('red', { title: 'a' }, alice)).task
  await repository.update('red', task.id, { title: 'a2' }, alice)
  await repository.create('blue', { title: 'b' }, alice)
  const unknownId = '00000000-0000-4000-8000-000000000000'
  const heard: LoggedEvent[] = []
  repository.onCommit((event) => { heard.push(event) })

  const cases: Array<[string, () => unknown, new (...args: any[]) => Error]> = [
    ['update of an unknown task', async () => await repository.update('red', unknownId, { title: 'x' }, alice), TaskNotFoundError],
    ['delete of an unknown task', async () => await repository.delete('red', unknownId, alice), TaskNotFoundError],
    ["update of another team's task", async () => await repository.update('blue', task.id, { title: 'x' }, alice), TaskNotFoundError],
    ["delete of another team's task", async () => await repository.delete('blue', task.id, alice), TaskNotFoundError],
    ['update with a stale ifMatch', async () => await repository.update('red', task.id, { title: 'x' }, { ...alice, ifMatch: [1] }), PreconditionFailedError],
    ['delete with a stale ifMatch', async () => await repository.delete('red', task.id, { ...alice, ifMatch: [1] }), PreconditionFailedError],
    ['create with an impossible dueDate', async () => await repository.create('red', { title: 'x', dueDate: '2026-02-30' }, alice), InvalidTaskError],
    ['update with an impossible dueDate', async () => await repository.update('red', task.id, { dueDate: '2026-13-01' }, alice), InvalidTaskError]
  ]
  for (const [name, mutation, errorClass] of cases) {
    const before = await stored(repository)
    const error = await thrown(mutation)
    t.type(error, errorClass, `${name} throws ${errorClass.name}`)
    t.same(await stored(repository), before, `${name} leaves tasks and event logs as they were`)
  }
  t.same(heard, [], 'no listener heard of a failed mutation')
})

eachBackend(t, 'a stale ifMatch error carries the current task; the current version (or *) succeeds', async (t, backend) => {
  const { repository } = await openRepository(t, backend)
  const task = (await repository.create('red', { title: 'a' }, alice)).task
  const current = (await repository.update('red', task.id, { title: 'b' }, alice)).task
  const error = await thrown(async () => await repository.update('red', task.id, { title: 'c' }, { ...alice, ifMatch: [1] }))
  t.type(error, PreconditionFailedError)
  t.same((error as PreconditionFailedError).current, current)
  t.same((error as PreconditionFailedError).current, await repository.get('red', task.id))

  t.equal((await repository.update('red', task.id, { title: 'c' }, { ...alice, ifMatch: [1, 2] })).task.version, 3, 'a list holding the current version matches')
  t.equal((await repository.update('red', task.id, { title: 'd' }, { ...alice, ifMatch: '*' })).task.version, 4)
  await repository.delete('red', task.id, { ...alice, ifMatch: [4] })
  t.equal(await repository.get('red', task.id), undefined)
  t.same((await eventsOf(repository, 'red')).map((e) => e.type), ['task.created', 'task.updated', 'task.updated', 'task.updated', 'task.deleted'])
})

eachBackend(t, 'field-level last-write-wins: two updates of different fields made from the same version both survive', async (t, backend) => {
  const { repository } = await openRepository(t, backend)
  const task = (await repository.create('red', { title: 'a' }, alice)).task
  // Both writers read version 1 and change a different field, without If-Match.
  await repository.update('red', task.id, { title: 'renamed' }, { actor: 'alice' })
  await repository.update('red', task.id, { status: 'in_progress' }, { actor: 'bob' })
  const final = await repository.get('red', task.id)
  t.match(final, { title: 'renamed', status: 'in_progress', version: 3, updatedBy: 'bob' })
  t.same((await eventsOf(repository, 'red')).slice(1).map((e) => e.changes), [['title'], ['status']])
})

eachBackend(t, 'a patch that changes nothing appends no event and keeps the version', async (t, backend) => {
  const { repository } = await openRepository(t, backend)
  const task = (await repository.create('red', { title: 'a', status: 'done' }, alice)).task
  const heard: LoggedEvent[] = []
  repository.onCommit((event) => { heard.push(event) })
  const before = await stored(repository)
  const result = await repository.update('red', task.id, { title: 'a', status: 'done' }, { actor: 'bob' })
  t.equal(result.event, null)
  t.same(result.task, task)
  t.same(await stored(repository), before)
  t.same(heard, [])

  const partly = await repository.update('red', task.id, { title: 'a', status: 'todo' }, alice)
  t.same(partly.event !== null && partly.event.type === 'task.updated' ? partly.event.changes : null, ['status'], 'only fields that really changed are listed')
})

eachBackend(t, 'list() returns the tasks in creation order and the seq it is current as of', async (t, backend) => {
  let clock = 1_000
  const { repository } = await openRepository(t, backend, { now: () => clock++ })
  t.same(await repository.list('red'), { tasks: [], seq: 0, nextCursor: null })
  const a = (await repository.create('red', { title: 'a' }, alice)).task
  const b = (await repository.create('red', { title: 'b' }, alice)).task
  const a2 = (await repository.update('red', a.id, { title: 'a2' }, alice)).task
  await repository.create('blue', { title: 'other team' }, alice)
  t.same(await repository.list('red'), { tasks: [a2, b], seq: 3, nextCursor: null })
  await repository.delete('red', b.id, alice)
  t.same(await repository.list('red'), { tasks: [a2], seq: 4, nextCursor: null })
  t.same((await repository.list('blue')).seq, 1)
})

eachBackend(t, 'onCommit listeners get each committed event once, after the commit', async (t, backend) => {
  const { repository, database } = await openRepository(t, backend)
  // Another connection sees only committed data: what it reads while the listener runs proves the commit.
  const observer = synchronousObserver(t, database)
  const heard: Array<{ event: LoggedEvent, transactionOpen: boolean, committed: LoggedEvent | undefined }> = []
  const stop = repository.onCommit((event) => {
    heard.push({ event, transactionOpen: observer.transactionOpen(), committed: observer.committed(event.teamId, event.seq) })
  })
  const task = (await repository.create('red', { title: 'a' }, alice)).task
  await repository.update('red', task.id, { title: 'a' }, alice) // no-op: no event
  await repository.update('red', task.id, { title: 'b' }, alice)
  await thrown(async () => await repository.update('red', task.id, { title: 'c' }, { ...alice, ifMatch: [1] }))
  await repository.create('blue', { title: 'x' }, alice)
  await repository.delete('red', task.id, alice)
  stop()
  await repository.create('red', { title: 'after unsubscribe' }, alice)

  t.same(heard.map((h) => [h.event.teamId, h.event.seq]), [['red', 1], ['red', 2], ['blue', 1], ['red', 3]])
  t.same(heard.map((h) => h.transactionOpen), [false, false, false, false], 'no transaction is open while listeners run')
  // The listener's event also says when it arrived (the start of its delivery lag); the log does not.
  t.same(heard.map((h) => h.committed), heard.map(({ event: { arrivedAt, ...stored } }) => stored), 'another connection already reads each event, payload and all')
  t.ok(heard.every((h) => typeof h.event.arrivedAt === 'number'), 'each committed event carries its arrival time')
})

eachBackend(t, 'migrations are safe to re-run: the same database opened twice (and again later) keeps its data and seq', async (t, backend) => {
  const { repository, database } = await openRepository(t, backend)
  const first = (await repository.create('red', { title: 'a' }, alice)).task

  const second = await openTestRepository(t, database)
  t.same(await second.repository.list('red'), { tasks: [first], seq: 1, nextCursor: null }, 'a second open while the first is still open')
  await second.repository.create('red', { title: 'b' }, alice)
  t.equal(await repository.headSeq('red'), 2, 'both connections share one sequence')
  await second.close()

  const third = await openTestRepository(t, database)
  t.equal((await third.repository.list('red')).tasks.length, 2)
  t.equal((await third.repository.create('red', { title: 'c' }, alice)).event?.seq, 3)
  const { applied, journal } = await migrationCounts(database)
  t.ok(journal > 0, 'the dialect has migrations')
  t.equal(applied, journal, 'each migration recorded once')
})
