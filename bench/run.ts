/**
 * `npm run bench`: runs the chosen scenarios against Atlas Realtime and against Socket.IO with
 * its Redis adapter, alternating the two (A B A B …) so both see the same machine, each as two
 * server processes on one redis-server that this orchestrator starts and stops, and each on
 * SQLite (a file per run) and on PostgreSQL (a database per run, created and dropped here). The load
 * generator runs as its own process (bench/loadgen.ts); this process only starts and stops
 * things, samples /proc at the load generator's marks, and reports.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { parseOptions, USAGE, type BenchOptions, type ScenarioSize } from './config.js'
import type { BackendName, LoadMessage, LoadPlan, LoadResult, OrchestratorMessage, ScenarioName, SystemName } from './ipc.js'
import { BackendCpu, DEFAULT_POSTGRES_URL, PostgresServer, redacted } from './postgres.js'
import { killAllNow, sleep, startRedis, stopAll, stopChild, track, type RedisProcess } from './processes.js'
import { sampleGroups } from './procstat.js'
import { formatAcrossBackends, formatRun, formatSummary, RESULTS_DIR, writeResults } from './report.js'
import { counterCheck, scrapeAll, type RunScrapes } from './metrics-check.js'
import { figuresOf, type Figures, type MarkSample, type RunRecord } from './stats.js'
import { BACKEND_LABEL, exampleReadsDriver, startSystem, SYSTEM_LABEL, type RunningSystem } from './systems.js'

const LOADGEN = fileURLToPath(new URL('./loadgen.js', import.meta.url))
/** No single run may take longer than this, whatever goes wrong. */
const RUN_TIMEOUT_MS = 20 * 60_000

interface Context {
  options: BenchOptions
  redis: RedisProcess
  workDir: string
  jwtSecret: string
  /** The PostgreSQL server the runs on PostgreSQL get their databases from (none without that backend). */
  postgres: PostgresServer | undefined
}

/** One line of progress, rewritten in place on a terminal and printed every few seconds otherwise. */
class Progress {
  #lastPrinted = 0
  show (text: string): void {
    if (process.stdout.isTTY) {
      process.stdout.write(`\r\x1b[2K${text}`)
    } else if (performance.now() - this.#lastPrinted > 3000) {
      this.#lastPrinted = performance.now()
      process.stdout.write(`${text}\n`)
    }
  }

  done (): void {
    if (process.stdout.isTTY) process.stdout.write('\r\x1b[2K')
    this.#lastPrinted = 0
  }
}

function planFor (scenario: ScenarioName, system: SystemName, size: ScenarioSize, ports: number[], jwtSecret: string): LoadPlan[] {
  const shards = scenario === 'idle' ? size.shards : 1
  const per = Math.ceil(size.clients / shards)
  return Array.from({ length: shards }, (_, s) => ({
    system,
    scenario,
    ports,
    jwtSecret,
    teams: size.teams,
    totalClients: size.clients,
    firstClient: s * per,
    clients: Math.min(per, size.clients - s * per),
    connectConcurrency: size.connectConcurrency,
    rate: size.rate,
    mutations: size.mutations,
    warmup: size.warmup,
    drainMs: size.drainMs,
    saturation: size.saturation,
    storm: size.storm
  }))
}

/** Runs the load generator shard(s) of one run against a started system, sampling /proc at every mark. */
/**
 * Called at each mark, once before the /proc sample and once after it (the Atlas runs scrape
 * /metrics there: before a window's start sample and after its end sample, so the scrapes'
 * own CPU stays out of the measured window).
 */
type MarkHook = (name: string, when: 'before' | 'after') => Promise<void>

async function drive (label: string, plans: LoadPlan[], running: RunningSystem, ctx: Context, samples: Record<string, MarkSample>, onMark?: MarkHook, database?: BackendCpu): Promise<LoadResult> {
  const progress = new Progress()
  const shards: ChildProcess[] = plans.map(() => track(fork(LOADGEN, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })))
  const groups = { servers: running.pids, redis: [ctx.redis.pid], loadgen: shards.map((c) => c.pid ?? 0) }
  const latest = plans.map(() => ({ phase: 'starting', connected: 0, target: 0, sent: 0, delivered: 0, expected: 0 }))
  const arrived = new Map<string, number>()
  const showProgress = (): void => {
    const sum = (k: 'connected' | 'target' | 'sent' | 'delivered' | 'expected'): number => latest.reduce((a, p) => a + p[k], 0)
    progress.show(`  [${label}] ${latest[0].phase}: ${sum('connected').toLocaleString('en-US')}/${sum('target').toLocaleString('en-US')} connected, ${sum('sent').toLocaleString('en-US')} mutations sent, ${sum('delivered').toLocaleString('en-US')}/${sum('expected').toLocaleString('en-US')} delivered`)
  }
  try {
    const results = await Promise.all(shards.map(async (child, i) => await new Promise<LoadResult>((resolve, reject) => {
      child.on('message', (message: LoadMessage) => {
        switch (message.type) {
          case 'progress':
            latest[i] = message
            showProgress()
            break
          case 'mark': {
            // Every shard must reach a mark before it is sampled and they all go on.
            const count = (arrived.get(message.name) ?? 0) + 1
            arrived.set(message.name, count)
            if (count < shards.length) break
            // Memory is read once the servers settled after the connection burst.
            const settle = message.name === 'connected' ? (plans[0].scenario === 'idle' ? 3000 : 1000) : 0
            void (async () => {
              await sleep(settle)
              await onMark?.(message.name, 'before')
              await database?.refresh()
              samples[message.name] = sampleNow(groups, database)
              await onMark?.(message.name, 'after')
              const ack: OrchestratorMessage = { type: 'ack', name: message.name }
              for (const shard of shards) shard.send(ack)
            })().catch(reject)
            break
          }
          case 'result':
            resolve(message.result)
            break
          case 'failed':
            reject(new Error(`load generator failed: ${message.message}`))
            break
        }
      })
      child.once('exit', (code) => { reject(new Error(`load generator exited (${code}) without a result`)) })
      setTimeout(() => { reject(new Error(`run took longer than ${RUN_TIMEOUT_MS / 60_000} min`)) }, RUN_TIMEOUT_MS).unref()
      const plan: OrchestratorMessage = { type: 'plan', plan: plans[i] }
      child.send(plan)
    })))
    progress.done()
    return mergeShards(results)
  } finally {
    progress.done()
    await Promise.all(shards.map(async (c) => { await stopChild(c, 2000) }))
  }
}

/** Every group's /proc figures at one instant; PostgreSQL's backends as the `database` group. */
function sampleNow (groups: Record<string, readonly number[]>, database: BackendCpu | undefined): MarkSample {
  const sample: MarkSample = { at: performance.now(), groups: sampleGroups(groups) }
  if (database !== undefined) sample.groups.database = database.sample()
  return sample
}

/** Shards only split the clients of the idle scenario, which has no windows: their counts add up. */
function mergeShards (results: LoadResult[]): LoadResult {
  const [first, ...rest] = results
  return rest.reduce((acc, r) => ({
    ...acc,
    connected: acc.connected + r.connected,
    connectFailures: acc.connectFailures + r.connectFailures,
    connectMs: Math.max(acc.connectMs, r.connectMs),
    resyncs: acc.resyncs + r.resyncs,
    windows: [...acc.windows, ...r.windows]
  }), first)
}

/** Where one run's servers keep their data: a fresh SQLite file or a fresh PostgreSQL database. */
interface RunDatabase {
  start: { databasePath: string } | { databaseUrl: string, driver: BenchOptions['driver'] }
  /** PostgreSQL: its backends' CPU, counted beside the servers'. */
  cpu?: BackendCpu
  remove (): Promise<void>
}

async function databaseFor (backend: BackendName, name: string, ctx: Context): Promise<RunDatabase> {
  if (backend === 'sqlite') {
    const databasePath = join(ctx.workDir, `${name}.db`)
    return {
      start: { databasePath },
      remove: async () => { for (const suffix of ['', '-wal', '-shm']) rmSync(databasePath + suffix, { force: true }) }
    }
  }
  const server = ctx.postgres
  if (server === undefined) throw new Error('bench: no PostgreSQL server for a PostgreSQL run')
  const created = await server.createDatabase(name)
  return {
    start: { databaseUrl: created.url, driver: ctx.options.driver },
    cpu: new BackendCpu(server, created.name),
    remove: async () => { await server.dropDatabase(created.name) }
  }
}

async function runOnce (scenario: ScenarioName, system: SystemName, backend: BackendName, round: number, ctx: Context): Promise<RunRecord> {
  const size = ctx.options.sizes[scenario]
  const database = await databaseFor(backend, `${system}-${scenario}-${round}`, ctx)
  const nodeFlags = ctx.options.profile ? ['--cpu-prof', `--cpu-prof-dir=${RESULTS_DIR}profiles/${backend}/${system}`] : []
  try {
    const running = await startSystem(system, { ...database.start, redisUrl: ctx.redis.url, jwtSecret: ctx.jwtSecret, processes: ctx.options.processes, nodeFlags, recovery: scenario === 'storm', log: ctx.options.log })
    try {
      // Start-up work (JIT, migrations, Redis connections) settles before the baseline is taken.
      await sleep(1000)
      await database.cpu?.refresh()
      const samples: Record<string, MarkSample> = { baseline: sampleNow({ servers: running.pids, redis: [ctx.redis.pid] }, database.cpu) }
      // Atlas with metrics: scrape every process at the edges of each window and at the end.
      const scraping = system === 'atlas' && scenario !== 'idle'
      const marks: RunScrapes['marks'] = {}
      const onMark: MarkHook | undefined = !scraping
        ? undefined
        : async (name, when) => {
          if ((when === 'before' && name.endsWith(':start')) || (when === 'after' && name.endsWith(':end'))) marks[name] = await scrapeAll(running.ports)
        }
      const load = await drive(`${system} ${BACKEND_LABEL[backend]} ${scenario} r${round}`, planFor(scenario, system, size, running.ports, ctx.jwtSecret), running, ctx, samples, onMark, database.cpu)
      const record: RunRecord = { scenario, system, backend, round, clients: size.clients, teams: size.teams, load, samples }
      if (scraping) {
        // The load generator has closed its clients: every frame it will ever count has been written.
        record.metrics = { marks, end: await scrapeAll(running.ports) }
        record.counterCheck = counterCheck(record, record.metrics, running.ports.length)
      }
      return record
    } finally {
      await running.stop()
    }
  } finally {
    await database.remove()
  }
}

function describe (scenario: ScenarioName, size: ScenarioSize, processes: number, backends: readonly BackendName[]): string {
  const base = `${size.clients.toLocaleString('en-US')} clients, ${size.teams} teams (${Math.round(size.clients / size.teams)} per team), ${processes} server process(es) per system and backend (${backends.map((b) => BACKEND_LABEL[b]).join(', ')})`
  switch (scenario) {
    case 'seed':
    case 'wide': return `${base}, ${size.mutations} mutations at ${size.rate}/s`
    case 'saturation': return `${base}, from ${size.saturation.startRate}/s up by ${size.saturation.stepRate}/s every ${size.saturation.stepSeconds} s until p99 > ${size.saturation.p99LimitMs} ms or deliveries fall behind`
    case 'storm': return `${base}, all disconnect, ${size.storm.perTeam} mutations per team, all reconnect at once and resume`
    case 'idle': return `${base}, idle authenticated connections, ${size.shards} load-generator process(es)`
  }
}

/** Which logging the Atlas servers ran with, for the report and the JSON. */
function loggingNote (log: boolean): string {
  return log
    ? "Atlas servers with the example's default logging (LOG unset: one access line per request, connection logs, info level; stdout to /dev/null); Socket.IO logs nothing"
    : 'Atlas servers with LOG=off (no logging); Socket.IO logs nothing'
}

/** One line over the rounds: every round's counted deliveries equal, and the lag p99s side by side. */
function counterCheckSummary (checks: ReadonlyArray<NonNullable<RunRecord['counterCheck']>>): string {
  const equal = checks.filter((c) => c.equal).length
  const lags = checks.flatMap((c) => (c.lag === null ? [] : [c.lag]))
  const lagText = lags.length === 0
    ? ''
    : `; lag p99 within the server bucket's width: bench ${lags.filter((l) => l.agree).length}/${lags.length}, bench since \`at\` ${lags.filter((l) => l.sinceCommitAgree === true).length}/${lags.length} (server bucket upper bound / bench / bench since \`at\`: ${lags.map((l) => `${l.serverP99Bucket.upperMs} / ${l.benchP99Ms.toFixed(2)} / ${l.sinceCommitP99Ms?.toFixed(2) ?? '—'} ms`).join(', ')})`
  return `  counter check (Atlas, metrics on): scraped = bench in ${equal}/${checks.length} round(s)${equal === checks.length ? ' [ok]' : ' [MISMATCH]'} (${checks.map((c) => `${c.scraped.toLocaleString('en-US')} ${c.equal ? '=' : '≠'} ${c.bench.toLocaleString('en-US')}`).join(', ')})${lagText}`
}

async function main (): Promise<number> {
  let options: BenchOptions
  try {
    const parsed = parseOptions(process.argv.slice(2))
    if (parsed === 'help') { console.log(USAGE); return 0 }
    options = parsed
  } catch (err) {
    console.error(`${err instanceof Error ? err.message : String(err)}\n\n${USAGE}`)
    return 2
  }
  const startedAt = new Date()
  const workDir = mkdtempSync(join(tmpdir(), 'atlas-bench-'))
  let postgres: PostgresServer | undefined
  const cleanUp = (): void => { killAllNow(); rmSync(workDir, { recursive: true, force: true }) }
  process.once('exit', () => { cleanUp(); postgres?.dropLiveSync() })
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      console.error(`\n${signal}: stopping every process the bench started`)
      cleanUp()
      // The servers are gone (SIGKILL): the run's PostgreSQL database can be dropped, within a few seconds.
      const dropped = postgres?.close() ?? Promise.resolve()
      void Promise.race([dropped, sleep(5000)]).finally(() => process.exit(130))
    })
  }
  const runs: Array<RunRecord & { figures: Figures }> = []
  const summaries: Record<string, object> = {}
  try {
    if (options.backends.includes('postgresql')) {
      if (options.driver === 'postgres' && !exampleReadsDriver()) throw new Error('--driver postgres: the built example (dist/examples/server.js) does not read DATABASE_DRIVER, so its servers would run pg; run with --driver pg')
      postgres = await PostgresServer.connect(process.env.ATLAS_BENCH_POSTGRES_URL || DEFAULT_POSTGRES_URL)
    }
    const redis = await startRedis()
    const ctx: Context = { options, redis, workDir, jwtSecret: randomBytes(32).toString('hex'), postgres }
    console.log(`Atlas Realtime bench${options.quick ? ' (quick sizes)' : ''}: ${options.scenarios.join(', ')}; systems ${options.systems.map((s) => SYSTEM_LABEL[s]).join(' vs ')}; redis-server at ${redis.url}`)
    console.log(`Backends: ${options.backends.map((b) => BACKEND_LABEL[b]).join(', ')}${postgres === undefined ? '' : ` (PostgreSQL: a database per run on ${redacted(postgres.url)}; Atlas with driver ${options.driver}, Socket.IO with pg)`}`)
    console.log(`Logging: ${loggingNote(options.log)}`)
    for (const scenario of options.scenarios) {
      const size = options.sizes[scenario]
      console.log(`\n== ${scenario}: ${describe(scenario, size, options.processes, options.backends)}; ${size.rounds} round(s), alternating ==`)
      const records: Partial<Record<BackendName, Partial<Record<SystemName, RunRecord[]>>>> = {}
      for (let round = 1; round <= size.rounds; round++) {
        for (const backend of options.backends) {
          for (const system of options.systems) {
            const record = await runOnce(scenario, system, backend, round, ctx)
            const figures = figuresOf([record])
            console.log(formatRun(record, figures))
            runs.push({ ...record, figures })
            ;((records[backend] ??= {})[system] ??= []).push(record)
          }
        }
      }
      const summary: Record<string, unknown> = { size, logging: loggingNote(options.log) }
      const figuresByBackend: Partial<Record<BackendName, Partial<Record<SystemName, Figures>>>> = {}
      for (const backend of options.backends) {
        const figures: Partial<Record<SystemName, Figures>> = {}
        for (const system of options.systems) figures[system] = figuresOf(records[backend]?.[system] ?? [])
        figuresByBackend[backend] = figures
        const text = formatSummary(scenario, figures, backend)
        console.log(text.text)
        const checks = (records[backend]?.atlas ?? []).flatMap((r) => (r.counterCheck === undefined ? [] : [r.counterCheck]))
        if (checks.length > 0) console.log(counterCheckSummary(checks))
        summary[backend] = { figures, ratios: text.ratios, pairs: text.pairs, targets: text.targets, counterChecks: checks }
      }
      if (figuresByBackend.sqlite !== undefined && figuresByBackend.postgresql !== undefined) {
        const across = formatAcrossBackends(scenario, figuresByBackend.sqlite, figuresByBackend.postgresql)
        console.log(across.text)
        summary.postgresqlOverSqlite = across.ratios
      }
      console.log(`  logging: ${loggingNote(options.log)}`)
      summaries[scenario] = summary
    }
    await redis.stop()
    return 0
  } catch (err) {
    console.error(`\nbench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}`)
    return 1
  } finally {
    if (runs.length > 0) {
      const path = writeResults(startedAt, { options: { scenarios: options.scenarios, systems: options.systems, backends: options.backends, driver: options.driver, postgresUrl: postgres === undefined ? null : redacted(postgres.url), metrics: options.metrics, log: options.log, processes: options.processes, quick: options.quick }, summaries, runs }, options.out)
      console.log(`\nresults: ${path}`)
    }
    await stopAll()
    await postgres?.close()
    rmSync(workDir, { recursive: true, force: true })
  }
}

process.exitCode = await main()
