/**
 * `npm run bench:write-path`: how many mutations per second the repository commits, on SQLite
 * and on PostgreSQL, for one team (every mutation waits for the team's seq row: the per-team
 * ceiling) and for many teams (the database's total), with a number of concurrent writers in
 * one process and no HTTP, WebSocket or broker in the way. The capacity model of README
 * "Deploying on several hosts" is built on these figures.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { openRepository, type OpenRepositoryOptions } from '../lib/open-repository.js'
import type { TaskRepository } from '../lib/repository.js'
import { transactionTimed } from '../lib/diagnostics.js'
import { positive } from './config.js'
import { DEFAULT_POSTGRES_URL, PostgresServer } from './postgres.js'
import { latencyHistogram } from './histogram.js'

const USAGE = 'Usage: npm run bench:write-path [-- --seconds 5] [--writers 16] [--teams 1,20] [--backends sqlite,postgresql] [--driver pg|postgres]'
const BACKENDS = ['sqlite', 'postgresql'] as const
type Backend = typeof BACKENDS[number]

interface Options { seconds: number, writers: number, teams: number[], backends: Backend[], driver: 'pg' | 'postgres' }

function parseOptions (argv: string[]): Options {
  const { values } = parseArgs({ args: argv, options: { seconds: { type: 'string' }, writers: { type: 'string' }, teams: { type: 'string' }, backends: { type: 'string' }, driver: { type: 'string' }, help: { type: 'boolean' } } })
  if (values.help === true) { console.log(USAGE); process.exit(0) }
  const backends = (values.backends ?? BACKENDS.join(',')).split(',').map((name) => {
    if (!(BACKENDS as readonly string[]).includes(name)) throw new Error(`write-path: unknown backend "${name}"\n${USAGE}`)
    return name as Backend
  })
  const driver = values.driver ?? 'pg'
  if (driver !== 'pg' && driver !== 'postgres') throw new Error(`write-path: --driver is pg or postgres\n${USAGE}`)
  return {
    seconds: positive('seconds', values.seconds ?? '5') as number,
    writers: positive('writers', values.writers ?? '16') as number,
    teams: (values.teams ?? '1,20').split(',').map((n) => positive('teams', n) as number),
    backends,
    driver
  }
}

interface Figures { backend: Backend, teams: number, writers: number, perSecond: number, transactionP50Ms: number, transactionP99Ms: number, requestP99Ms: number }

/** `writers` loops, each creating then updating tasks of its team (writer i writes team i mod teams) for `seconds`. */
async function measure (repository: TaskRepository, backend: Backend, teams: number, writers: number, seconds: number): Promise<Figures> {
  // In µs, as every histogram of the bench.
  const transactions = latencyHistogram()
  const onTransaction = (message: unknown): void => { transactions.recordValue(Math.round((message as { durationMs: number }).durationMs * 1000)) }
  const requests = latencyHistogram()
  let done = 0
  const until = performance.now() + seconds * 1000
  subscribe(transactionTimed.name, onTransaction)
  try {
    await Promise.all(Array.from({ length: writers }, async (_, w) => {
      const teamId = `team${w % teams}`
      for (let i = 0; performance.now() < until; i++) {
        const started = performance.now()
        const { task } = await repository.create(teamId, { title: `w${w} #${i}` }, { actor: `writer${w}`, mutationId: `w${w}-${i}-c` })
        await repository.update(teamId, task.id, { status: 'done' }, { actor: `writer${w}`, mutationId: `w${w}-${i}-u` })
        requests.recordValue(Math.round((performance.now() - started) * 500))
        done += 2
      }
    }))
  } finally {
    unsubscribe(transactionTimed.name, onTransaction)
  }
  const ms = (us: number): number => us / 1000
  return { backend, teams, writers, perSecond: Math.round(done / seconds), transactionP50Ms: ms(transactions.getValueAtPercentile(50)), transactionP99Ms: ms(transactions.getValueAtPercentile(99)), requestP99Ms: ms(requests.getValueAtPercentile(99)) }
}

const options = parseOptions(process.argv.slice(2))
const rows: Figures[] = []
const postgres = options.backends.includes('postgresql') ? await PostgresServer.connect(process.env.ATLAS_BENCH_POSTGRES_URL || DEFAULT_POSTGRES_URL) : undefined
const dir = mkdtempSync(join(tmpdir(), 'atlas-write-path-'))
try {
  for (const backend of options.backends) {
    for (const teams of options.teams) {
      let where: OpenRepositoryOptions
      let drop = async (): Promise<void> => {}
      if (backend === 'sqlite') {
        where = { databasePath: join(dir, `${teams}.db`) }
      } else {
        const database = await (postgres as PostgresServer).createDatabase(`write_path_${teams}`)
        where = { url: database.url, driver: options.driver, poolSize: options.writers }
        drop = async () => { await (postgres as PostgresServer).dropDatabase(database.name) }
      }
      const opened = await openRepository(where)
      try {
        rows.push(await measure(opened.repository, backend, teams, options.writers, options.seconds))
      } finally {
        await opened.close()
        await drop()
      }
    }
  }
} finally {
  await postgres?.close()
  rmSync(dir, { recursive: true, force: true })
}

console.log(`write path: ${options.writers} concurrent writers, ${options.seconds} s each${options.backends.includes('postgresql') ? `, PostgreSQL driver ${options.driver}` : ''}`)
console.log('| backend | teams | mutations/s | transaction p50 / p99 | mutation p99 (with waits) |')
console.log('|---|---|---|---|---|')
for (const r of rows) {
  console.log(`| ${r.backend} | ${r.teams} | ${r.perSecond} | ${r.transactionP50Ms.toFixed(2)} / ${r.transactionP99Ms.toFixed(2)} ms | ${r.requestP99Ms.toFixed(2)} ms |`)
}
