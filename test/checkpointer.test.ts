import t from 'tap'
import { existsSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { openDatabase } from '../lib/db/open.js'
import { WalCheckpointer, type CheckpointResult } from '../lib/db/checkpointer.js'
import { SqliteTaskRepository } from '../lib/sqlite-repository.js'

const alice = { actor: 'alice' }

t.test('the writing connection never checkpoints; the background thread copies the WAL into the database file', async (t) => {
  const path = join(t.testdir(), 'atlas.db')
  const database = openDatabase({ path, checkpointIntervalMs: 60_000 })
  t.teardown(async () => { await database.close() })
  t.equal(database.sqlite.pragma('wal_autocheckpoint', { simple: true }), 0, 'commits never checkpoint on the event loop')

  // 1,500 commits write far more than SQLite's 1,000-page automatic threshold: with automatic
  // checkpoints on this connection, the database file would have grown by now.
  const repository = new SqliteTaskRepository(database.db)
  const sizeBefore = statSync(path).size
  for (let i = 0; i < 1500; i++) await repository.create(`team-${i % 10}`, { title: `task ${i}` }, alice)
  t.equal(statSync(path).size, sizeBefore, 'nothing was copied into the database file by the commits')

  const keepAlive = setInterval(() => {}, 1000)
  t.teardown(() => { clearInterval(keepAlive) })
  // A second checkpointer with a short interval on the same file: the thread does the copying.
  const results: CheckpointResult[] = []
  let done!: () => void
  const copied = new Promise<void>((resolve) => { done = resolve })
  const checkpointer = new WalCheckpointer(database.sqlite, {
    path,
    intervalMs: 10,
    busyTimeoutMs: 1000,
    onCheckpoint: (result) => { results.push(result); if (result.checkpointed === result.log) done() }
  })
  t.teardown(async () => { await checkpointer.close() })
  await copied
  t.ok(results[results.length - 1].log > 1000, `the WAL held every commit's pages (${results[results.length - 1].log} frames)`)
  t.ok(statSync(path).size > sizeBefore, 'the pages are now in the database file')
  t.equal((await repository.list('team-3')).tasks.length, 150, 'and reads see every task')
})

t.test('by default a file database gets the checkpoint thread; an in-memory one has no WAL and none', async (t) => {
  const file = openDatabase({ path: join(t.testdir(), 'atlas.db') })
  t.teardown(async () => { await file.close() })
  t.equal(file.sqlite.pragma('wal_autocheckpoint', { simple: true }), 0, 'checkpoints are the thread\'s')
  const memory = openDatabase({ path: ':memory:' })
  t.teardown(async () => { await memory.close() })
  t.equal(memory.sqlite.pragma('wal_autocheckpoint', { simple: true }), 1000, 'SQLite\'s default, untouched')
})

t.test('a checkpoint thread that dies hands checkpoints back to the writing connection', async (t) => {
  const path = join(t.testdir(), 'atlas.db')
  const database = openDatabase({ path, checkpointIntervalMs: 0 })
  t.teardown(async () => { await database.close() })
  t.equal(database.sqlite.pragma('wal_autocheckpoint', { simple: true }), 1000, 'interval 0: SQLite checkpoints as usual')

  // The thread is unref'd (housekeeping never holds a process open): hold this one meanwhile.
  const keepAlive = setInterval(() => {}, 1000)
  t.teardown(() => { clearInterval(keepAlive) })
  // The thread cannot open a database that is not there: it fails at once.
  let checkpointer!: WalCheckpointer
  const failure = await new Promise<Error>((resolve) => {
    checkpointer = new WalCheckpointer(database.sqlite, {
      path: join(t.testdir(), 'missing', 'gone.db'),
      intervalMs: 10,
      busyTimeoutMs: 1000,
      onFailure: resolve
    })
    t.equal(database.sqlite.pragma('wal_autocheckpoint', { simple: true }), 0, 'taken over by the thread while it starts')
  })
  await checkpointer.close()
  t.match(failure.message, /directory does not exist|unable to open|no such file/i, 'the failure is reported with its cause')
  t.equal(database.sqlite.pragma('wal_autocheckpoint', { simple: true }), 1000, 'the connection checkpoints by itself again')
})

t.test('the compiled checkpointer starts its thread from dist/, as the example server does', async (t) => {
  // The thread is a file of its own, found next to the checkpointer: the build must put it there.
  const root = fileURLToPath(new URL('../', import.meta.url))
  for (const [built, source] of [['dist/lib/db/checkpointer.js', 'lib/db/checkpointer.ts'], ['dist/lib/db/checkpoint-worker.js', 'lib/db/checkpoint-worker.js']]) {
    if (!existsSync(root + built)) throw new Error(`${built} is missing: run npm run build (npm test does it first)`)
    if (statSync(root + built).mtimeMs < statSync(root + source).mtimeMs) throw new Error(`${built} is older than ${source}: run npm run build`)
  }
  const compiled = new URL('../dist/lib/db/checkpointer.js', import.meta.url).href
  const { WalCheckpointer: Compiled } = await import(compiled) as typeof import('../lib/db/checkpointer.js')
  const path = join(t.testdir(), 'atlas.db')
  const database = openDatabase({ path, checkpointIntervalMs: 0 })
  t.teardown(async () => { await database.close() })
  new SqliteTaskRepository(database.db).create('team-1', { title: 'one' }, alice)
  const keepAlive = setInterval(() => {}, 1000)
  t.teardown(() => { clearInterval(keepAlive) })
  const result = await new Promise<CheckpointResult | Error>((resolve) => {
    const checkpointer = new Compiled(database.sqlite, { path, intervalMs: 10, busyTimeoutMs: 1000, onCheckpoint: resolve, onFailure: resolve })
    t.teardown(async () => { await checkpointer.close() })
  })
  if (result instanceof Error) t.fail(`the thread failed: ${result.message}`)
  else t.ok(result.checkpointed > 0, 'the thread ran and checkpointed')
})
