import t, { type Test } from 'tap'
import pg from 'pg'
import { once } from 'node:events'
import { createServer, createConnection, type Server, type Socket } from 'node:net'
import { openPostgres, type OpenedPostgres, type OpenPostgresOptions, type PostgresDriver } from '../lib/db/postgres.js'
import { PostgresTaskRepository } from '../lib/postgres-repository.js'
import { DatabaseUnavailableError, MutationIdConflictError, PreconditionFailedError, TaskNotFoundError } from '../lib/errors.js'
import type { LoggedEvent } from '../lib/types.js'
import { createTestDatabase } from './helpers/postgres.js'
import { freePort } from './helpers/net.js'
import { startTcpProxy } from './helpers/tcp-proxy.js'

const alice = { actor: 'alice' }
const DRIVERS: PostgresDriver[] = ['pg', 'postgres']

/** A database of this test (its own name), dropped when the test ends. */
async function testDatabase (t: Test, suffix: string): Promise<string> {
  return createTestDatabase(t, `atlas_pgrepo_${process.pid}_${suffix}`)
}

/** One "host": its own pool and repository on `url`, closed when the test ends. */
async function host (t: Test, url: string, options: Partial<OpenPostgresOptions> & { now?: () => number } = {}): Promise<{ repository: PostgresTaskRepository, opened: OpenedPostgres }> {
  const { now, ...open } = options
  const opened = await openPostgres({ url, ...open })
  t.teardown(opened.close)
  return { repository: new PostgresTaskRepository(opened.db, { now }), opened }
}

/** A plain connection for looking at (or holding locks in) the database behind the repository's back. */
async function rawClient (t: Test, url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  t.teardown(async () => { await client.end().catch(() => {}) })
  return client
}

function payloads (events: LoggedEvent[]): any[] {
  return events.map((e) => JSON.parse(e.payload))
}

async function rejectionOf (promise: Promise<unknown>): Promise<any> {
  try {
    await promise
  } catch (err) {
    return err
  }
  throw new Error('expected a rejection')
}

t.test('two hosts starting at once: the migrations run once, under the advisory lock, which is released', async (t) => {
  const url = await testDatabase(t, 'migrate')
  await Promise.all([host(t, url), host(t, url), host(t, url, { driver: 'postgres' })])
  const raw = await rawClient(t, url)
  const applied = await raw.query('select count(*)::int as n from drizzle.__drizzle_migrations')
  t.equal(applied.rows[0].n, 1, 'the one migration recorded once')
  const tables = await raw.query("select tablename from pg_tables where schemaname = 'public' order by 1")
  t.same(tables.rows.map((r) => r.tablename), ['events', 'mutations', 'revocations', 'tasks', 'team_sequences'])
  const locks = await raw.query("select count(*)::int as n from pg_locks where locktype = 'advisory'")
  t.equal(locks.rows[0].n, 0, 'no advisory lock left held')
})

for (const driver of DRIVERS) {
  t.test(`${driver}: create, update, delete, list and the event log, seqs gapless per team`, async (t) => {
    const url = await testDatabase(t, `crud_${driver}`)
    let clock = Date.UTC(2026, 0, 5, 9, 0, 0)
    const { repository, opened } = await host(t, url, { driver, now: () => clock })
    t.equal(opened.driver, driver)
    t.equal(repository.dialect, 'postgresql')
    const heard: LoggedEvent[] = []
    repository.onCommit((e) => heard.push(e))

    const created = await repository.create('red', { title: 'a', assignee: 'bob' }, { actor: 'alice', mutationId: 'm1' })
    t.match(created, { replayed: false, task: { title: 'a', assignee: 'bob', version: 1, teamId: 'red', updatedBy: 'alice', createdAt: new Date(clock).toISOString() }, event: { type: 'task.created', seq: 1, mutationId: 'm1' } })
    const id = created.task.id
    const again = await repository.create('red', { title: 'a', assignee: 'bob' }, { actor: 'alice', mutationId: 'm1' })
    t.same(again, { task: created.task, event: null, replayed: true }, 'a retry answers the stored result')
    t.ok(await rejectionOf(repository.create('red', { title: 'other' }, { actor: 'alice', mutationId: 'm1' })) instanceof MutationIdConflictError)

    clock += 1000
    const updated = await repository.update('red', id, { status: 'done' }, { ...alice, ifMatch: [1] })
    t.match(updated.event, { type: 'task.updated', seq: 2, changes: ['status'], task: { status: 'done', version: 2, title: 'a' } })
    t.same((await repository.update('red', id, { status: 'done' }, alice)).event, null, 'no change, no event')
    const stale = await rejectionOf(repository.update('red', id, { title: 'b' }, { ...alice, ifMatch: [1] }))
    t.ok(stale instanceof PreconditionFailedError, 'If-Match of an old version: 412')
    t.equal(stale.statusCode, 412)
    t.equal(stale.current.version, 2, 'with the current task')
    t.ok(await rejectionOf(repository.update('red', 'nope', { title: 'b' }, alice)) instanceof TaskNotFoundError)
    t.ok(await rejectionOf(repository.delete('blue', id, alice)) instanceof TaskNotFoundError, 'another team\'s task is not found')

    await repository.create('blue', { title: 'x' }, alice)
    const second = (await repository.create('red', { title: 'c' }, alice)).task
    clock += 1000
    const third = (await repository.create('red', { title: 'd' }, alice)).task
    t.match((await repository.delete('red', id, alice)).event, { type: 'task.deleted', seq: 5, version: 2 })
    t.equal(await repository.get('red', id), undefined)
    t.same(await repository.get('red', second.id), second)

    t.same(payloads(await repository.eventsAfter('red', 0, 100)).map((e) => [e.seq, e.type]),
      [[1, 'task.created'], [2, 'task.updated'], [3, 'task.created'], [4, 'task.created'], [5, 'task.deleted']])
    t.same(payloads(await repository.eventsAfter('red', 3, 1)).map((e) => e.seq), [4])
    t.same(heard.map((e) => [e.teamId, e.seq]), [['red', 1], ['red', 2], ['blue', 1], ['red', 3], ['red', 4], ['red', 5]], 'listeners heard each commit once')
    t.same(await repository.history('red'), { head: 5, prunedThrough: 0 })
    t.equal(await repository.headSeq('blue'), 1)
    t.equal(await repository.headSeq('green'), 0)

    const all = await repository.list('red')
    t.same(all, { tasks: [second, third], seq: 5, nextCursor: null })
    const first = await repository.list('red', { limit: 1 })
    t.same(first.tasks, [second])
    t.type(first.nextCursor, 'string')
    t.same(await repository.list('red', { limit: 1, cursor: first.nextCursor ?? '' }), { tasks: [third], seq: 5, nextCursor: null })

    t.equal(await repository.unpublishedCount(), 6)
    t.same((await repository.unpublished(Date.now() + 1e12, 100)).map((e) => [e.teamId, e.seq]), [['blue', 1], ['red', 1], ['red', 2], ['red', 3], ['red', 4], ['red', 5]])
    await repository.markPublished([{ teamId: 'red', seq: 2 }, { teamId: 'blue', seq: 1 }])
    t.equal(await repository.unpublishedCount(), 4)

    const r1 = await repository.revoke('bob', null)
    const r2 = await repository.revoke('carol', 'red')
    t.same(r2, { id: r1.id + 1, userId: 'carol', teamId: 'red' })
    t.same(await repository.revocationsAfter(r1.id - 1, 10), [r1, r2])
    t.equal(await repository.lastRevocationId(), r2.id)
    t.equal(await repository.writable(), true)
  })
}

t.test('200 concurrent creates from two hosts on one team: seqs exactly 1..200, committed in order', async (t) => {
  const url = await testDatabase(t, 'seq')
  const a = await host(t, url)
  const b = await host(t, url, { driver: 'postgres' })
  const heard: number[] = []
  for (const { repository } of [a, b]) repository.onCommit((e) => heard.push(e.seq))

  // A reader following the log meanwhile must never see a seq before an earlier one committed.
  let done = false
  let last = 0
  let reads = 0
  const follow = (async () => {
    while (!done || last < 200) {
      const batch = await a.repository.eventsAfter('red', last, 1000)
      for (const e of batch) {
        if (e.seq !== last + 1) throw new Error(`the log skipped from ${last} to ${e.seq}`)
        last = e.seq
      }
      reads++
    }
  })()
  const results = await Promise.all(Array.from({ length: 200 }, async (_, i) =>
    await (i % 2 === 0 ? a : b).repository.create('red', { title: `t${i}` }, alice)))
  done = true
  await follow
  t.same(results.map((r) => r.event?.seq).sort((x, y) => (x ?? 0) - (y ?? 0)), Array.from({ length: 200 }, (_, i) => i + 1), 'every seq once')
  t.same(heard.sort((x, y) => x - y), Array.from({ length: 200 }, (_, i) => i + 1), 'each committed event heard once, by its host')
  t.equal(last, 200)
  t.ok(reads > 0)
  t.equal((await a.repository.list('red')).tasks.length, 200)
  t.same(await b.repository.history('red'), { head: 200, prunedThrough: 0 })
})

t.test('concurrent retries of one mutation id from two hosts: one task, one event, equal answers', async (t) => {
  const url = await testDatabase(t, 'retry')
  const a = await host(t, url)
  const b = await host(t, url)
  for (let i = 0; i < 20; i++) {
    const context = { actor: 'alice', mutationId: `m${i}` }
    const [x, y] = await Promise.all([a.repository.create('red', { title: `t${i}` }, context), b.repository.create('red', { title: `t${i}` }, context)])
    t.same(x.task, y.task, `m${i}: both answers name the same task`)
    t.same([x.replayed, y.replayed].sort(), [false, true], `m${i}: one applied, one replayed`)
  }
  t.equal((await a.repository.list('red')).tasks.length, 20, 'one task per mutation id')
  t.equal((await a.repository.eventsAfter('red', 0, 100)).length, 20, 'one event per mutation id')
})

t.test('two PATCHes of different fields from two hosts, forced to wait on the row together: both fields kept', async (t) => {
  const url = await testDatabase(t, 'lww')
  const a = await host(t, url)
  const b = await host(t, url, { driver: 'postgres' })
  const raw = await rawClient(t, url)
  const { task } = await a.repository.create('red', { title: 'old' }, alice)

  // A third connection holds the row; both PATCHes then read it only once it is released.
  await raw.query('begin')
  await raw.query('select * from tasks where id = $1 for update', [task.id])
  const patches = Promise.all([
    a.repository.update('red', task.id, { title: 'new' }, { actor: 'alice' }),
    b.repository.update('red', task.id, { status: 'done' }, { actor: 'bob' })
  ])
  // Both wait on the lock (an observable state, polled: PostgreSQL has no event for it).
  for (;;) {
    const waiting = await raw.query("select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'")
    if (waiting.rows[0].n === 2) break
  }
  await raw.query('commit')
  const [x, y] = await patches

  const final = await a.repository.get('red', task.id)
  t.match(final, { title: 'new', status: 'done', version: 3 }, 'the row has both fields')
  t.same([x.task.version, y.task.version].sort(), [2, 3], 'distinct versions')
  const [second, third] = payloads(await a.repository.eventsAfter('red', 1, 10))
  t.equal(second.task.version, 2)
  t.equal(third.task.version, 3)
  t.match(third.task, { title: 'new', status: 'done' }, 'the later event\'s snapshot carries the earlier change')
  t.equal(second.changes.length, 1)
  t.match(second.task, second.changes[0] === 'title' ? { title: 'new', status: 'todo' } : { title: 'old', status: 'done' }, 'the earlier snapshot only its own change')

  // And without the held lock: many concurrent pairs, each ending with both fields.
  const many = await Promise.all(Array.from({ length: 20 }, async (_, i) => (await a.repository.create('red', { title: `p${i}` }, alice)).task))
  await Promise.all(many.flatMap((p) => [
    a.repository.update('red', p.id, { title: `${p.title}!` }, alice),
    b.repository.update('red', p.id, { assignee: 'bob' }, alice)
  ]))
  for (const p of many) t.match(await b.repository.get('red', p.id), { title: `${p.title}!`, assignee: 'bob', version: 3 })
})

t.test('prune keeps every unpublished event and all after it; old mutation ids and revocations are forgotten', async (t) => {
  const url = await testDatabase(t, 'prune')
  let clock = 1_000_000
  const { repository } = await host(t, url, { now: () => clock })
  const { task } = await repository.create('red', { title: 'a' }, { actor: 'alice', mutationId: 'old' })
  for (let i = 0; i < 4; i++) await repository.update('red', task.id, { title: `a${i}` }, alice)
  await repository.revoke('bob', null)
  await repository.markPublished([1, 2, 4, 5].map((seq) => ({ teamId: 'red', seq })))

  t.same(await repository.prune({ maxEventsPerTeam: 1 }), { events: 2, mutationIds: 0 }, 'stops before seq 3, unpublished')
  t.same(await repository.history('red'), { head: 5, prunedThrough: 2 })
  await repository.markPublished([{ teamId: 'red', seq: 3 }])
  t.same(await repository.prune({ maxEventsPerTeam: 1 }), { events: 2, mutationIds: 0 })
  t.same((await repository.eventsAfter('red', 0, 10)).map((e) => e.seq), [5])

  clock += 60_000
  await repository.create('red', { title: 'b' }, { actor: 'alice', mutationId: 'new' })
  t.same(await repository.prune({ mutationIdTtlMs: 30_000 }), { events: 0, mutationIds: 1 })
  t.equal(await repository.lastRevocationId(), 0, 'the old revocation is gone')
  t.same((await repository.create('red', { title: 'other' }, { actor: 'alice', mutationId: 'old' })).replayed, false, 'a forgotten id is new again')
  t.same((await repository.create('red', { title: 'b' }, { actor: 'alice', mutationId: 'new' })).replayed, true)
})

for (const driver of DRIVERS) {
  t.test(`${driver}: a server that starts after the process is waited for, within connectTimeoutMs`, async (t) => {
    const url = new URL(await testDatabase(t, `late_${driver}`))
    const proxy = await startTcpProxy(t, 5432)
    await proxy.cut()
    url.port = String(proxy.port)
    // Not up yet: its port resets connections, and the server comes up once start-up was turned away twice.
    let attempts = 0
    const turnedAway = new Promise<void>((resolve) => {
      const notYet = createServer((socket) => {
        socket.destroy()
        if (++attempts === 2) notYet.close(() => { resolve() })
      }).listen(proxy.port, '127.0.0.1')
    })
    const opening = openPostgres({ url: url.href, driver, connectTimeoutMs: 20_000 })
    await turnedAway
    await proxy.restore()
    const opened = await opening
    t.teardown(async () => { await opened.close() })
    const repository = new PostgresTaskRepository(opened.db)
    t.equal((await repository.create('red', { title: 'late' }, alice)).event?.seq, 1, 'opened, migrated and writing')
  })
}

for (const driver of DRIVERS) {
  t.test(`${driver}: an unreachable server fails start-up within connectTimeoutMs, coded, password hidden`, async (t) => {
    const closed = await freePort()
    let started = Date.now()
    // Refused: tried again until the timeout (PostgreSQL may be starting), then refused for good.
    const refused = await rejectionOf(openPostgres({ url: `postgres://postgres:s3cret@127.0.0.1:${closed}/atlas`, driver, connectTimeoutMs: 1000 }))
    t.equal(refused.code, 'ATLAS_ERR_DATABASE_UNREACHABLE')
    t.match(refused.message, /cannot connect to PostgreSQL at postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:\d+\/atlas \(.*ECONNREFUSED.*\): nothing accepts connections there/)
    t.notMatch(refused.message, /s3cret/)
    t.equal(refused.cause.code, 'ECONNREFUSED')
    t.comment(`refused after ${Date.now() - started} ms of retries`)

    // A password with an unencoded / and #: the URL cannot be parsed, and is still shown without it.
    const unparsable = await rejectionOf(openPostgres({ url: `postgres://postgres:s3/cr#et@127.0.0.1:${closed}/atlas`, driver }))
    t.equal(unparsable.code, 'ATLAS_ERR_DATABASE_UNREACHABLE')
    t.match(unparsable.message, /at postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:\d+\/atlas \(Invalid URL\): the URL cannot be parsed: percent-encode/)
    t.notMatch(unparsable.message, /s3|cr#et/)

    // A server that accepts connections and never answers: the timeout ends the wait.
    const silent = createServer(() => {})
    silent.listen(0, '127.0.0.1')
    await once(silent, 'listening')
    const held = new Set<Socket>()
    silent.on('connection', (s) => held.add(s))
    t.teardown(() => { for (const s of held) s.destroy(); silent.close() })
    started = Date.now()
    const silence = await rejectionOf(openPostgres({ url: `postgres://postgres@127.0.0.1:${(silent.address() as { port: number }).port}/atlas`, driver, connectTimeoutMs: 500 }))
    t.equal(silence.code, 'ATLAS_ERR_DATABASE_UNREACHABLE')
    t.ok(Date.now() - started < 2000, `failed after ${Date.now() - started} ms`)
  })
}

for (const driver of DRIVERS) {
  t.test(`${driver}: PostgreSQL going away answers DATABASE_UNAVAILABLE (503), never ends the process; back, it works again`, async (t) => {
    const url = new URL(await testDatabase(t, `down_${driver}`))
    const relay = await startTcpProxy(t, 5432)
    url.port = String(relay.port)
    const errors: Error[] = []
    // A short statement timeout: it also bounds close(), which postgres.js spends whole after an outage.
    const { repository } = await host(t, url.href, { driver, connectTimeoutMs: 1000, statementTimeoutMs: 2000, onError: (err) => errors.push(err) })
    const { task } = await repository.create('red', { title: 'a' }, alice)
    await Promise.all([repository.list('red'), repository.get('red', task.id), repository.headSeq('red')]) // several pooled connections

    await relay.cut()
    const started = Date.now()
    const failed = await rejectionOf(repository.update('red', task.id, { title: 'b' }, alice))
    t.ok(failed instanceof DatabaseUnavailableError, `a mutation: ${String(failed)}`)
    t.equal(failed.statusCode, 503)
    t.equal(failed.code, 'DATABASE_UNAVAILABLE')
    t.ok((await rejectionOf(repository.list('red'))) instanceof DatabaseUnavailableError, 'a read')
    t.equal(await repository.writable(), false)
    t.ok(Date.now() - started < 5000, `all answered within ${Date.now() - started} ms`)
    if (driver === 'pg') t.ok(errors.length > 0, 'the idle connections\' failures went to onError')

    await relay.restore()
    t.match((await repository.update('red', task.id, { title: 'b' }, alice)).task, { title: 'b', version: 2 })
    t.equal(await repository.writable(), true)
  })
}

t.test('a mutation whose connection is terminated mid-transaction rejects with DATABASE_UNAVAILABLE; the host goes on', async (t) => {
  const url = await testDatabase(t, 'terminate')
  const errors: Error[] = []
  const { repository } = await host(t, url, { onError: (err) => errors.push(err) })
  const raw = await rawClient(t, url)
  const { task } = await repository.create('red', { title: 'a' }, alice)
  await raw.query('begin')
  await raw.query('select * from tasks where id = $1 for update', [task.id])
  const blocked = repository.update('red', task.id, { title: 'b' }, alice)
  let pid: number | undefined
  while (pid === undefined) {
    const waiting = await raw.query("select pid from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'")
    pid = waiting.rows[0]?.pid
  }
  await raw.query('select pg_terminate_backend($1)', [pid])
  const failed = await rejectionOf(blocked)
  t.ok(failed instanceof DatabaseUnavailableError, String(failed))
  // The cause: the server's 57P01, or what the driver said of the dead connection when rolling back.
  t.match(failed.cause.message, /terminat|not queryable/)
  await raw.query('rollback')
  t.match((await repository.update('red', task.id, { title: 'c' }, alice)).task, { title: 'c', version: 2 }, 'nothing half-applied; the next one works')
  t.same((await repository.eventsAfter('red', 0, 10)).map((e) => e.seq), [1, 2])
})
