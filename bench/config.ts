import { parseArgs } from 'node:util'
import type { BackendName, LoadPlan, ScenarioName, SystemName } from './ipc.js'

/** The sizes of one scenario; `LoadPlan` minus what the orchestrator fills in per run. */
export interface ScenarioSize {
  clients: number
  teams: number
  rate: number
  mutations: number
  /**
   * Mutations sent before the measured window and left out of it (seed, wide): both systems are
   * then measured in steady state, with their hot paths compiled by V8's optimizing tier, as a
   * server that has run for a while is. Without it, a 10 s window is partly JIT warm-up.
   */
  warmup: number
  /** Load-generator processes (more than one only where a single process would run out of file descriptors). */
  shards: number
  connectConcurrency: number
  drainMs: number
  saturation: LoadPlan['saturation']
  storm: LoadPlan['storm']
  rounds: number
}

const SATURATION = { startRate: 200, stepRate: 100, stepSeconds: 10, maxRate: 3000, p99LimitMs: 100 }
const STORM = { warmPerTeam: 5, perTeam: 100, graceMs: 3000 }
const BASE = { warmup: 0, shards: 1, connectConcurrency: 100, drainMs: 5000, saturation: SATURATION, storm: STORM, rounds: 2 }

/** The sizes the issue asks for. */
const FULL: Record<ScenarioName, ScenarioSize> = {
  seed: { ...BASE, clients: 1000, teams: 20, rate: 200, mutations: 2000, warmup: 2000 },
  wide: { ...BASE, clients: 5000, teams: 100, rate: 200, mutations: 2000, warmup: 2000 },
  saturation: { ...BASE, clients: 1000, teams: 20, rate: 200, mutations: 0, warmup: 2000, rounds: 1, drainMs: 2000 },
  storm: { ...BASE, clients: 1000, teams: 20, rate: 200, mutations: 0 },
  // One process cannot hold 20,000 client sockets under a 20,000 file-descriptor limit: two can.
  idle: { ...BASE, clients: 20_000, teams: 100, rate: 0, mutations: 0, shards: 2, connectConcurrency: 200, rounds: 1 }
}

/** Small versions (`--quick`, and the default): the same shapes in seconds, for a quick look or CI. */
const QUICK: Record<ScenarioName, ScenarioSize> = {
  seed: { ...FULL.seed, clients: 200, teams: 10, mutations: 1000, warmup: 500 },
  wide: { ...FULL.wide, clients: 500, teams: 50, mutations: 600, warmup: 300 },
  saturation: { ...FULL.saturation, clients: 200, teams: 10, warmup: 500, saturation: { ...SATURATION, stepRate: 200, stepSeconds: 3, maxRate: 2000 } },
  storm: { ...FULL.storm, clients: 200, teams: 10, storm: { ...STORM, perTeam: 20 } },
  idle: { ...FULL.idle, clients: 2000, teams: 20, shards: 1 }
}

export const SCENARIOS: readonly ScenarioName[] = ['seed', 'wide', 'saturation', 'storm', 'idle']
/** What `--systems` names; `--metrics` decides which Atlas subject(s) `atlas` stands for. */
export const SYSTEMS = ['atlas', 'socketio'] as const
export type MetricsMode = 'both' | 'on' | 'off'
/** The databases every subject runs on, in the order they run within a round. */
export const BACKENDS: readonly BackendName[] = ['sqlite', 'postgresql']
/** PostgreSQL drivers of the Atlas servers (lib/open-repository.ts's `driver`). */
export const DRIVERS = ['pg', 'postgres'] as const
export type DriverName = typeof DRIVERS[number]

export interface BenchOptions {
  scenarios: ScenarioName[]
  /** The subjects of each round, in the order they run: Atlas metrics on, Atlas metrics off, Socket.IO. */
  systems: SystemName[]
  /** Each round runs every subject on each of these, in this order. */
  backends: BackendName[]
  /** The Atlas servers' PostgreSQL driver (DATABASE_DRIVER); the Socket.IO peer always uses pg. */
  driver: DriverName
  metrics: MetricsMode
  /** Atlas servers with the example's default logging (LOG unset) rather than LOG=off. */
  log: boolean
  /** Where to write the results JSON (default: bench/results/<timestamp>.json). */
  out: string | undefined
  quick: boolean
  sizes: Record<ScenarioName, ScenarioSize>
  /** Server processes per system (the setup: 2). */
  processes: number
  /** Write CPU profiles of the servers (node --cpu-prof) under bench/results/profiles/<system>. */
  profile: boolean
}

export const USAGE = `Usage: npm run bench -- [options]
  --scenario <name>   seed | wide | saturation | storm | idle | all (repeatable; default: seed)
  --quick             small sizes (the default when no --scenario is given)
  --full              the issue's sizes even without --scenario
  --rounds <n>        A/B alternations per scenario (default: 2; 1 for saturation and idle)
  --systems <list>    atlas,socketio (default both)
  --backends <list>   sqlite,postgresql: every subject on each (default both, side by side);
                      PostgreSQL: a fresh database per run on ATLAS_BENCH_POSTGRES_URL
                      (default postgres://postgres@127.0.0.1:5432), dropped after it
  --driver <name>     pg | postgres: the Atlas servers' PostgreSQL driver (default pg; the
                      Socket.IO peer always uses pg)
  --metrics <mode>    both | on | off: Atlas with its metrics on (as the example ships), off
                      (METRICS=off), or both side by side (default both)
  --log <on|off>      Atlas servers with the example's default logging (on, the default: one
                      access line per request, to /dev/null) or LOG=off
  --out <file>        write the results JSON there instead of bench/results/<timestamp>.json
  --clients <n>  --teams <n>  --rate <n>  --mutations <n>   override the scenario's sizes
  --warmup <n>        mutations sent before the measured windows of seed, wide, saturation (0: none)
  --step-seconds <n>  --start-rate <n>  --step-rate <n>     saturation steps
  --processes <n>     server processes per system (default 2, sharing the database and Redis)
  --profile           write CPU profiles of the servers to bench/results/profiles/<system>/
  --help`

/** Reads the command line; throws with a usage message on anything it does not know. */
export function parseOptions (argv: readonly string[]): BenchOptions | 'help' {
  const { values } = parseArgs({
    args: [...argv],
    strict: true,
    options: {
      scenario: { type: 'string', multiple: true },
      quick: { type: 'boolean' },
      full: { type: 'boolean' },
      rounds: { type: 'string' },
      systems: { type: 'string' },
      backends: { type: 'string' },
      driver: { type: 'string' },
      metrics: { type: 'string' },
      log: { type: 'string' },
      out: { type: 'string' },
      clients: { type: 'string' },
      teams: { type: 'string' },
      rate: { type: 'string' },
      mutations: { type: 'string' },
      warmup: { type: 'string' },
      'step-seconds': { type: 'string' },
      'start-rate': { type: 'string' },
      'step-rate': { type: 'string' },
      profile: { type: 'boolean' },
      processes: { type: 'string' },
      help: { type: 'boolean' }
    }
  })
  if (values.help === true) return 'help'
  const named = (values.scenario ?? []).flatMap((s) => s.split(','))
  const scenarios = named.includes('all') ? [...SCENARIOS] : named.length === 0 ? ['seed' as const] : named.map(checkScenario)
  const quick = values.quick === true || (named.length === 0 && values.full !== true)
  const wanted = values.systems === undefined ? [...SYSTEMS] : values.systems.split(',').map(checkSystem)
  const backends = values.backends === undefined ? [...BACKENDS] : [...new Set(values.backends.split(',').map(checkBackend))]
  const driver = oneOf('driver', values.driver, DRIVERS) ?? 'pg'
  const metrics = oneOf('metrics', values.metrics, ['both', 'on', 'off'] as const) ?? 'both'
  const log = (oneOf('log', values.log, ['on', 'off'] as const) ?? 'on') === 'on'
  const systems: SystemName[] = []
  if (wanted.includes('atlas')) {
    if (metrics !== 'off') systems.push('atlas')
    if (metrics !== 'on') systems.push('atlas-metrics-off')
  }
  if (wanted.includes('socketio')) systems.push('socketio')
  const base = quick ? QUICK : FULL
  const sizes = {} as Record<ScenarioName, ScenarioSize>
  for (const name of SCENARIOS) {
    const s: ScenarioSize = { ...base[name], saturation: { ...base[name].saturation }, storm: { ...base[name].storm } }
    s.rounds = positive('rounds', values.rounds) ?? s.rounds
    s.clients = positive('clients', values.clients) ?? s.clients
    s.teams = positive('teams', values.teams) ?? s.teams
    s.rate = positive('rate', values.rate) ?? s.rate
    s.mutations = positive('mutations', values.mutations) ?? s.mutations
    s.warmup = nonNegative('warmup', values.warmup) ?? s.warmup
    s.saturation.stepSeconds = positive('step-seconds', values['step-seconds']) ?? s.saturation.stepSeconds
    s.saturation.startRate = positive('start-rate', values['start-rate']) ?? s.saturation.startRate
    s.saturation.stepRate = positive('step-rate', values['step-rate']) ?? s.saturation.stepRate
    if (s.teams > s.clients) throw new Error(`--teams (${s.teams}) cannot exceed --clients (${s.clients})`)
    sizes[name] = s
  }
  return { scenarios, systems, backends, driver, metrics, log, out: values.out, quick, sizes, processes: positive('processes', values.processes) ?? 2, profile: values.profile === true }
}

function checkScenario (name: string): ScenarioName {
  if ((SCENARIOS as readonly string[]).includes(name)) return name as ScenarioName
  throw new Error(`unknown scenario ${JSON.stringify(name)}; expected one of ${SCENARIOS.join(', ')}, all`)
}

function checkSystem (name: string): typeof SYSTEMS[number] {
  if ((SYSTEMS as readonly string[]).includes(name)) return name as typeof SYSTEMS[number]
  throw new Error(`unknown system ${JSON.stringify(name)}; expected atlas, socketio (--metrics chooses Atlas with metrics on, off or both)`)
}

function checkBackend (name: string): BackendName {
  if ((BACKENDS as readonly string[]).includes(name)) return name as BackendName
  throw new Error(`unknown backend ${JSON.stringify(name)}; expected ${BACKENDS.join(', ')}`)
}

function oneOf<T extends string> (flag: string, value: string | undefined, allowed: readonly T[]): T | undefined {
  if (value === undefined) return undefined
  if ((allowed as readonly string[]).includes(value)) return value as T
  throw new Error(`--${flag} must be one of ${allowed.join(', ')} (got ${JSON.stringify(value)})`)
}

/** `--flag`'s value as a positive integer; undefined when the flag was not given. */
export function positive (flag: string, value: string | undefined): number | undefined {
  return integerAtLeast(1, 'a positive integer', flag, value)
}

function nonNegative (flag: string, value: string | undefined): number | undefined {
  return integerAtLeast(0, 'an integer ≥ 0', flag, value)
}

function integerAtLeast (min: number, what: string, flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  const n = Number(value)
  if (!Number.isSafeInteger(n) || n < min) throw new Error(`--${flag} must be ${what} (got ${JSON.stringify(value)})`)
  return n
}
