import { spawnSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { cpus, loadavg, totalmem } from 'node:os'
import { dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { BackendName, ScenarioName, SystemName } from './ipc.js'
import { formatCounterCheck } from './metrics-check.js'
import { checkMetricsCost, checkTargets, ratios, type Figures, type RunRecord, type TargetCheck } from './stats.js'
import { BACKEND_LABEL, SYSTEM_LABEL } from './systems.js'

/** bench/results in the source tree (git ignores it); this file runs from dist/bench/. */
export const RESULTS_DIR = fileURLToPath(new URL('../../bench/results/', import.meta.url))

const ms = (v: number | null | undefined): string => (v == null ? '—' : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2))
const int = (v: number): string => Math.round(v).toLocaleString('en-US')
const kb = (bytes: number | null): string => (bytes == null ? '—' : `${(bytes / 1024).toFixed(1)} KB`)

/** The block printed after each run. */
export function formatRun (record: RunRecord, f: Figures): string {
  const lines = [
    `  ${SYSTEM_LABEL[record.system]} on ${BACKEND_LABEL[record.backend ?? 'sqlite']} — ${record.scenario}, round ${record.round}: ${int(f.connected)} connected in ${(record.load.connectMs / 1000).toFixed(1)} s (${f.connectFailures} failed), ${record.teams} teams`
  ]
  if (record.scenario !== 'idle') {
    lines.push(
      `    delivered ${int(f.delivered)}/${int(f.expected)}  lost ${int(f.lost)}  late ${int(f.late)}  duplicated ${int(f.duplicated)}  out of order ${int(f.outOfOrder)}  foreign ${f.foreign}  resyncs ${f.resyncs}`,
      `    latency ms p50 ${ms(f.latencyMs?.p50)}  p95 ${ms(f.latencyMs?.p95)}  p99 ${ms(f.latencyMs?.p99)}  max ${ms(f.latencyMs?.max)}   ${int(f.deliveredPerSec)} deliveries/s   (HTTP p50 ${ms(f.httpLatencyMs?.p50)} p99 ${ms(f.httpLatencyMs?.p99)})`,
      `    server CPU ${f.serverCpuMicrosPerDelivery == null ? '—' : f.serverCpuMicrosPerDelivery.toFixed(1)} µs/delivery${f.serverSystemMicrosPerDelivery == null ? '' : ` (${f.serverSystemMicrosPerDelivery.toFixed(1)} in the kernel)`}${f.databaseCpuMicrosPerDelivery == null ? '' : `, PostgreSQL backends ${f.databaseCpuMicrosPerDelivery.toFixed(1)} µs/delivery`}  (servers ${f.cpuPercent.servers.toFixed(0)}%,${record.backend === 'postgresql' ? ` PostgreSQL ${f.cpuPercent.database.toFixed(0)}%,` : ''} redis ${f.cpuPercent.redis.toFixed(0)}%, load generator ${f.cpuPercent.loadgen.toFixed(0)}% of a core)`
    )
  }
  lines.push(`    server RSS ${kb(f.serverRssBytesPerConnection)} per connection (${(f.serverRssBytes / 1048576).toFixed(0)} MB for both processes)`)
  if (f.steps !== undefined) {
    for (const s of f.steps) {
      lines.push(`    step ${String(s.rate).padStart(5)}/s: sent ${s.achievedRate.toFixed(0)}/s, p99 ${ms(s.p99Ms)} ms, delivered ${int(s.delivered)}/${int(s.expected)}, ${s.cpuMicrosPerDelivery == null ? '—' : s.cpuMicrosPerDelivery.toFixed(1)} µs/delivery`)
    }
    lines.push(`    highest sustained rate ${f.highestHeldRate ?? '—'}/s (stopped: ${f.stoppedBecause ?? '—'})`)
  }
  if (f.wholeAfterMs !== undefined) {
    lines.push(`    all reconnected after ${ms(f.reconnectedAfterMs)} ms; every client whole after ${f.wholeAfterMs == null ? 'never' : `${ms(f.wholeAfterMs)} ms`}; sessions recovered ${f.recovered ?? 0}`)
  }
  if (record.counterCheck !== undefined) lines.push(...formatCounterCheck(record.counterCheck))
  return lines.join('\n')
}

/** Column headings of the subjects, in the order they run. */
const SUBJECTS: ReadonlyArray<[SystemName, string]> = [['atlas', 'Atlas'], ['atlas-metrics-off', 'Atlas no metr.'], ['socketio', 'Socket.IO']]
/** The ratios printed, numerator / denominator: what metrics cost, then each Atlas against the peer. */
const PAIRS: ReadonlyArray<[SystemName, SystemName, string]> = [['atlas', 'atlas-metrics-off', 'on/off'], ['atlas', 'socketio', 'Atlas/SIO'], ['atlas-metrics-off', 'socketio', 'off/SIO']]

export interface Summary {
  text: string
  /** Atlas / Socket.IO (Atlas with metrics if it ran, else without), as before the third subject. */
  ratios: Record<string, number | null> | null
  /** Every pair of subjects that ran, keyed `<numerator>/<denominator>`. */
  pairs: Record<string, Record<string, number | null>>
  targets: TargetCheck[]
}

/**
 * The per-scenario summary of one backend: the subjects' figures side by side, the ratios and
 * the targets.
 */
export function formatSummary (scenario: ScenarioName, figures: Partial<Record<SystemName, Figures>>, backend: BackendName = 'sqlite'): Summary {
  const subjects = SUBJECTS.filter(([name]) => figures[name] !== undefined)
  const pairs = PAIRS.filter(([a, b]) => figures[a] !== undefined && figures[b] !== undefined)
  const pairRatios: Record<string, Record<string, number | null>> = {}
  for (const [a, b] of pairs) pairRatios[`${a}/${b}`] = ratios(figures[a] as Figures, figures[b] as Figures)
  const rows: Array<[string, (f: Figures) => string]> = [['connected (failed)', (f) => `${int(f.connected)} (${f.connectFailures})`]]
  if (scenario !== 'idle') {
    rows.push(
      ['delivered/expected', (f) => `${int(f.delivered)}/${int(f.expected)}`],
      ['lost / dup / out of order', (f) => `${f.lost} / ${f.duplicated} / ${f.outOfOrder}`],
      ['late (after drain time)', (f) => int(f.late)],
      ['latency p50 ms', (f) => ms(f.latencyMs?.p50)],
      ['latency p95 ms', (f) => ms(f.latencyMs?.p95)],
      ['latency p99 ms', (f) => ms(f.latencyMs?.p99)],
      ['latency max ms', (f) => ms(f.latencyMs?.max)],
      ['deliveries/s', (f) => int(f.deliveredPerSec)],
      ['HTTP mutation p50 / p99 ms', (f) => `${ms(f.httpLatencyMs?.p50)} / ${ms(f.httpLatencyMs?.p99)}`],
      ['server CPU µs/delivery', (f) => (f.serverCpuMicrosPerDelivery == null ? '—' : f.serverCpuMicrosPerDelivery.toFixed(1))],
      ['of which kernel µs/delivery', (f) => (f.serverSystemMicrosPerDelivery == null ? '—' : f.serverSystemMicrosPerDelivery.toFixed(1))],
      ...(backend === 'postgresql'
        ? [
            ['PostgreSQL CPU µs/delivery', (f: Figures) => (f.databaseCpuMicrosPerDelivery == null ? '—' : f.databaseCpuMicrosPerDelivery.toFixed(1))],
            ['server + PostgreSQL µs/del.', (f: Figures) => (f.totalCpuMicrosPerDelivery == null ? '—' : f.totalCpuMicrosPerDelivery.toFixed(1))]
          ] satisfies Array<[string, (f: Figures) => string]>
        : []),
      ['load generator CPU %', (f) => f.cpuPercent.loadgen.toFixed(0)]
    )
  }
  rows.push(['server RSS/connection', (f) => kb(f.serverRssBytesPerConnection)])
  if (scenario === 'idle') rows.push(['server RSS, both processes', (f) => `${(f.serverRssBytes / 1048576).toFixed(0)} MB`])
  if (scenario === 'saturation') rows.push(['highest held rate /s', (f) => String(f.highestHeldRate ?? '—')])
  if (scenario === 'storm') rows.push(['time to whole ms', (f) => (f.wholeAfterMs == null ? 'never' : ms(f.wholeAfterMs))])
  const width = 28
  const out = [`\n== ${scenario}: summary on ${BACKEND_LABEL[backend]}${pairs.length > 0 ? ` (ratios: ${pairs.map(([, , h]) => h).join(', ')})` : ''} ==`]
  out.push(`${''.padEnd(width)}${subjects.map(([, h]) => h.padStart(16)).join('')}${pairs.map(([, , h]) => h.padStart(11)).join('')}`)
  const ratioKey: Record<string, string> = {
    'latency p50 ms': 'latency p50', 'latency p95 ms': 'latency p95', 'latency p99 ms': 'latency p99', 'latency max ms': 'latency max',
    'deliveries/s': 'delivered msg/s', 'server CPU µs/delivery': 'server CPU µs/delivery', 'of which kernel µs/delivery': 'of which kernel µs/delivery', 'server RSS/connection': 'server RSS/connection',
    'PostgreSQL CPU µs/delivery': 'database CPU µs/delivery', 'server + PostgreSQL µs/del.': 'server + database CPU µs/delivery',
    'highest held rate /s': 'highest held rate', 'time to whole ms': 'time to whole (storm)'
  }
  for (const [label, show] of rows) {
    const key = ratioKey[label]
    const cells = subjects.map(([name]) => show(figures[name] as Figures).padStart(16)).join('')
    const ratioCells = pairs.map(([a, b]) => {
      const value = key === undefined ? null : pairRatios[`${a}/${b}`][key]
      return (value == null ? '' : `${value.toFixed(2)}×`).padStart(11)
    }).join('')
    out.push(`${label.padEnd(width)}${cells}${ratioCells}`)
  }
  // The targets are the issue's, for Atlas as it ships (metrics on) when it ran.
  const atlas = figures.atlas ?? figures['atlas-metrics-off']
  const peer = figures.socketio
  if (scenario === 'saturation') out.push(...stepTable(atlas, peer))
  const targets = atlas === undefined ? [] : checkTargets(scenario, atlas, peer)
  if ((scenario === 'seed' || scenario === 'wide') && figures.atlas !== undefined && figures['atlas-metrics-off'] !== undefined) {
    targets.push(checkMetricsCost(figures.atlas, figures['atlas-metrics-off']))
  }
  for (const t of targets) out.push(`  target ${t.met === null ? '[n/a]' : t.met ? '[met]' : '[MISSED]'} ${t.target}: ${t.detail}`)
  const ratiosAtlasPeer = pairRatios['atlas/socketio'] ?? pairRatios['atlas-metrics-off/socketio'] ?? null
  return { text: out.join('\n'), ratios: ratiosAtlasPeer, pairs: pairRatios, targets }
}

/**
 * Saturation compared rate by rate: the merged rows above cover each system's own held steps,
 * which differ, so the like-for-like comparison is per step.
 */
function stepTable (a: Figures | undefined, s: Figures | undefined): string[] {
  const rates = [...new Set([...(a?.steps ?? []), ...(s?.steps ?? [])].map((x) => x.rate))].sort((x, y) => x - y)
  const cell = (f: Figures | undefined, rate: number): string => {
    const step = f?.steps?.find((x) => x.rate === rate)
    if (step === undefined) return ''.padStart(26)
    const cpu = step.cpuMicrosPerDelivery == null ? '—' : step.cpuMicrosPerDelivery.toFixed(1)
    return `${ms(step.p99Ms).padStart(8)} ms ${cpu.padStart(6)} µs/d${step.delivered < step.expected ? ' !' : '  '}`
  }
  // CPU: the servers' and, on PostgreSQL, its backends'.
  const lines = [`  per step:  rate   ${'Atlas p99, CPU/delivery'.padStart(26)}   ${'Socket.IO p99, CPU/delivery'.padStart(26)}`]
  for (const rate of rates) lines.push(`  ${String(rate).padStart(14)}/s ${cell(a, rate)}   ${cell(s, rate)}`)
  return lines
}

/** The figures compared across backends (PostgreSQL's over SQLite's, per subject) and where they apply. */
const ACROSS: ReadonlyArray<{ label: string, key: string, show: (f: Figures) => string, in: (s: ScenarioName) => boolean }> = [
  { label: 'latency p99 ms', key: 'latency p99', show: (f) => ms(f.latencyMs?.p99), in: (s) => s !== 'idle' },
  { label: 'deliveries/s', key: 'delivered msg/s', show: (f) => int(f.deliveredPerSec), in: (s) => s !== 'idle' },
  { label: 'server CPU µs/delivery', key: 'server CPU µs/delivery', show: (f) => (f.serverCpuMicrosPerDelivery == null ? '—' : f.serverCpuMicrosPerDelivery.toFixed(1)), in: (s) => s !== 'idle' },
  { label: 'server + database µs/del.', key: 'server + database CPU µs/delivery', show: (f) => (f.totalCpuMicrosPerDelivery == null ? '—' : f.totalCpuMicrosPerDelivery.toFixed(1)), in: (s) => s !== 'idle' },
  { label: 'server RSS/connection', key: 'server RSS/connection', show: (f) => kb(f.serverRssBytesPerConnection), in: (s) => s === 'idle' },
  { label: 'highest held rate /s', key: 'highest held rate', show: (f) => String(f.highestHeldRate ?? '—'), in: (s) => s === 'saturation' },
  { label: 'time to whole ms', key: 'time to whole (storm)', show: (f) => (f.wholeAfterMs == null ? 'never' : ms(f.wholeAfterMs)), in: (s) => s === 'storm' }
]

/**
 * Each subject on PostgreSQL against itself on SQLite, same invocation: what the database
 * changes. Returns the text and the ratios, keyed by subject.
 */
export function formatAcrossBackends (scenario: ScenarioName, sqlite: Partial<Record<SystemName, Figures>>, postgresql: Partial<Record<SystemName, Figures>>): { text: string, ratios: Partial<Record<SystemName, Record<string, number | null>>> } {
  const subjects = SUBJECTS.filter(([name]) => sqlite[name] !== undefined && postgresql[name] !== undefined)
  const across: Partial<Record<SystemName, Record<string, number | null>>> = {}
  for (const [name] of subjects) across[name] = ratios(postgresql[name] as Figures, sqlite[name] as Figures)
  const width = 28
  const out = [`\n== ${scenario}: PostgreSQL against SQLite (per subject: SQLite | PostgreSQL | PostgreSQL/SQLite) ==`]
  out.push(`${''.padEnd(width)}${subjects.map(([, h]) => h.padStart(30)).join('')}`)
  for (const row of ACROSS.filter((r) => r.in(scenario))) {
    const cells = subjects.map(([name]) => {
      const r = across[name]?.[row.key]
      return `${row.show(sqlite[name] as Figures)} | ${row.show(postgresql[name] as Figures)} | ${r == null ? '—' : `${r.toFixed(2)}×`}`.padStart(30)
    }).join('')
    out.push(`${row.label.padEnd(width)}${cells}`)
  }
  return { text: out.join('\n'), ratios: across }
}

/** Writes the invocation's results as one JSON file; returns its path. */
export function writeResults (startedAt: Date, content: object, path = `${RESULTS_DIR}${startedAt.toISOString().replace(/[:.]/g, '-')}.json`): string {
  mkdirSync(dirname(path), { recursive: true })
  writeFileSync(path, JSON.stringify({ startedAt: startedAt.toISOString(), machine: machine(), source: source(), ...content }, null, 2))
  return path
}

/** Which code was measured: the commit and the files changed on top of it. */
function source (): object {
  const cwd = fileURLToPath(new URL('../../', import.meta.url))
  const git = (...args: string[]): string => spawnSync('git', args, { cwd, encoding: 'utf8' }).stdout?.trim() ?? ''
  return { commit: git('rev-parse', 'HEAD'), changed: git('status', '--porcelain').split('\n').filter((l) => l !== '') }
}

function machine (): object {
  const list = cpus()
  return { cpus: list.length, model: list[0]?.model, memoryBytes: totalmem(), loadavg: loadavg(), node: process.version }
}
