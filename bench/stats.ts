import { decodeHistogram, latencyHistogram } from './histogram.js'
import { WARM_UP, type BackendName, type LoadResult, type ScenarioName, type SystemName, type WindowResult } from './ipc.js'
import type { CounterCheck, RunScrapes } from './metrics-check.js'
import type { GroupSample } from './procstat.js'

/** Everything recorded about one run of one system: what the load generator saw, what /proc said. */
export interface RunRecord {
  scenario: ScenarioName
  system: SystemName
  /** The database its servers shared (absent in records written before PostgreSQL: SQLite). */
  backend?: BackendName
  round: number
  clients: number
  teams: number
  load: LoadResult
  /** Samples per mark (`connected`, `<window>:start`, `<window>:end`), plus `baseline` before any client. */
  samples: Record<string, MarkSample>
  /** Atlas with metrics on: its /metrics scrapes and the counter check against the tracker. */
  metrics?: RunScrapes
  counterCheck?: CounterCheck
}

/** The processes' figures at one instant; `at` in ms on the orchestrator's clock. */
export interface MarkSample {
  at: number
  groups: GroupSample
}

/** The figures the issue asks for, for one run or several rounds merged. */
export interface Figures {
  connected: number
  connectFailures: number
  expected: number
  delivered: number
  lost: number
  /** Arrived, but only after the drain time. */
  late: number
  duplicated: number
  outOfOrder: number
  foreign: number
  resyncs: number
  /** Null when nothing was delivered. */
  latencyMs: { p50: number, p95: number, p99: number, max: number } | null
  /** HTTP mutation request to response (the commit path), for diagnosis. */
  httpLatencyMs: { p50: number, p99: number } | null
  deliveredPerSec: number
  /** Server processes' CPU (user + system) over the measured windows per delivered message. */
  serverCpuMicrosPerDelivery: number | null
  /** The kernel's (system) part of serverCpuMicrosPerDelivery. */
  serverSystemMicrosPerDelivery: number | null
  /**
   * PostgreSQL: its backends' CPU serving the run's database, per delivered message (null on
   * SQLite, whose work is inside the servers' own figure).
   */
  databaseCpuMicrosPerDelivery: number | null
  /**
   * Servers plus database backends: what one delivery costs the machine's database-side and
   * server-side processes, comparable across backends (on SQLite: the servers' figure).
   */
  totalCpuMicrosPerDelivery: number | null
  /** CPU use over the measured windows, in % of one core (database: PostgreSQL's backends, 0 on SQLite). */
  cpuPercent: { servers: number, database: number, redis: number, loadgen: number }
  /** Growth of the servers' RSS from before any client to all connected, per connection. */
  serverRssBytesPerConnection: number | null
  serverRssBytes: number
  highestHeldRate?: number
  stoppedBecause?: string
  reconnectedAfterMs?: number | null
  wholeAfterMs?: number | null
  recovered?: number
  steps?: Array<{ rate: number, achievedRate: number, p99Ms: number, delivered: number, expected: number, cpuMicrosPerDelivery: number | null }>
}

/** Every window of a run except warm-ups, which no figure counts. */
function timedWindows (record: RunRecord): WindowResult[] {
  return record.load.windows.filter((w) => w.name !== WARM_UP)
}

/** The windows whose figures stand for the run: saturation counts the steps that held, storm its reconnect. */
export function measuredWindows (record: RunRecord): WindowResult[] {
  const { saturation } = record.load
  const windows = timedWindows(record)
  if (record.scenario === 'storm') return windows.filter((w) => w.name === 'storm')
  if (record.scenario === 'saturation' && saturation !== undefined) {
    const held = windows.filter((w) => w.rate <= saturation.highestHeldRate)
    return held.length > 0 ? held : windows.slice(0, 1)
  }
  return windows
}

function windowCpu (record: RunRecord, w: WindowResult, group: string, part: 'cpuMicros' | 'systemMicros' = 'cpuMicros'): number {
  const start = record.samples[`${w.name}:start`]?.groups[group]
  const end = record.samples[`${w.name}:end`]?.groups[group]
  return start === undefined || end === undefined ? 0 : end[part] - start[part]
}

function windowWallMicros (record: RunRecord, w: WindowResult): number {
  const start = record.samples[`${w.name}:start`]
  const end = record.samples[`${w.name}:end`]
  return start === undefined || end === undefined ? 0 : (end.at - start.at) * 1000
}

/** Figures of several rounds of one system in one scenario (one round: that run's figures). */
export function figuresOf (records: readonly RunRecord[]): Figures {
  const latency = latencyHistogram()
  const httpLatency = latencyHistogram()
  let expected = 0; let delivered = 0; let late = 0; let duplicated = 0; let outOfOrder = 0; let foreign = 0; let resyncs = 0
  let serverCpu = 0; let serverSystemCpu = 0; let databaseCpu = 0; let redisCpu = 0; let loadgenCpu = 0; let wall = 0; let activeSeconds = 0
  let connected = 0; let connectFailures = 0
  const rssPerConnection: number[] = []
  let serverRss = 0
  for (const record of records) {
    connected += record.load.connected
    connectFailures += record.load.connectFailures
    resyncs += record.load.resyncs
    for (const w of measuredWindows(record)) {
      latency.add(decodeHistogram(w.latency))
      httpLatency.add(decodeHistogram(w.httpLatency))
      expected += w.expected
      delivered += w.delivered
      late += w.late
      duplicated += w.duplicated
      outOfOrder += w.outOfOrder
      foreign = Math.max(foreign, w.foreign)
      serverCpu += windowCpu(record, w, 'servers')
      serverSystemCpu += windowCpu(record, w, 'servers', 'systemMicros')
      databaseCpu += windowCpu(record, w, 'database')
      redisCpu += windowCpu(record, w, 'redis')
      loadgenCpu += windowCpu(record, w, 'loadgen')
      wall += windowWallMicros(record, w)
      activeSeconds += w.durationMs / 1000
    }
    const before = record.samples.baseline?.groups.servers?.rssBytes
    const after = record.samples.connected?.groups.servers?.rssBytes
    if (before !== undefined && after !== undefined && record.load.connected > 0) {
      rssPerConnection.push((after - before) / record.load.connected)
      serverRss = Math.max(serverRss, after)
    }
  }
  const percent = (micros: number): number => (wall > 0 ? (micros / wall) * 100 : 0)
  const figures: Figures = {
    connected: Math.round(connected / records.length),
    connectFailures,
    expected,
    delivered,
    lost: Math.max(0, expected - delivered),
    late,
    duplicated,
    outOfOrder,
    foreign,
    resyncs,
    latencyMs: latency.totalCount === 0 ? null : {
      p50: latency.getValueAtPercentile(50) / 1000,
      p95: latency.getValueAtPercentile(95) / 1000,
      p99: latency.getValueAtPercentile(99) / 1000,
      max: latency.maxValue / 1000
    },
    httpLatencyMs: httpLatency.totalCount === 0 ? null : { p50: httpLatency.getValueAtPercentile(50) / 1000, p99: httpLatency.getValueAtPercentile(99) / 1000 },
    deliveredPerSec: activeSeconds > 0 ? delivered / activeSeconds : 0,
    serverCpuMicrosPerDelivery: delivered > 0 && serverCpu > 0 ? serverCpu / delivered : null,
    serverSystemMicrosPerDelivery: delivered > 0 && serverCpu > 0 ? serverSystemCpu / delivered : null,
    databaseCpuMicrosPerDelivery: delivered > 0 && databaseCpu > 0 ? databaseCpu / delivered : null,
    totalCpuMicrosPerDelivery: delivered > 0 && serverCpu > 0 ? (serverCpu + databaseCpu) / delivered : null,
    cpuPercent: { servers: percent(serverCpu), database: percent(databaseCpu), redis: percent(redisCpu), loadgen: percent(loadgenCpu) },
    serverRssBytesPerConnection: rssPerConnection.length > 0 ? mean(rssPerConnection) : null,
    serverRssBytes: serverRss
  }
  const saturations = records.map((r) => r.load.saturation).filter((s) => s !== undefined)
  if (saturations.length > 0) {
    figures.highestHeldRate = mean(saturations.map((s) => s.highestHeldRate))
    figures.stoppedBecause = saturations.map((s) => s.stoppedBecause).join('; ')
    figures.steps = records.flatMap((r) => timedWindows(r).map((w) => {
      // Servers and, on PostgreSQL, its backends: a step's cost whichever process does the database work.
      const cpu = windowCpu(r, w, 'servers') + windowCpu(r, w, 'database')
      return { rate: w.rate, achievedRate: w.achievedRate, p99Ms: decodeHistogram(w.latency).getValueAtPercentile(99) / 1000, delivered: w.delivered, expected: w.expected, cpuMicrosPerDelivery: w.delivered > 0 && cpu > 0 ? cpu / w.delivered : null }
    }))
  }
  const storms = records.map((r) => r.load.storm).filter((s) => s !== undefined)
  if (storms.length > 0) {
    // The worst round counts: the target is about every client, every time.
    figures.wholeAfterMs = storms.some((s) => s.wholeAfterMs === null) ? null : Math.max(...storms.map((s) => s.wholeAfterMs ?? 0))
    figures.reconnectedAfterMs = storms.some((s) => s.reconnectedAfterMs === null) ? null : Math.max(...storms.map((s) => s.reconnectedAfterMs ?? 0))
    figures.recovered = Math.round(mean(storms.map((s) => s.recovered)))
  }
  return figures
}

function mean (values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length
}

/**
 * Atlas / Socket.IO for each comparable figure (null where either side has none); also any
 * subject against another (metrics on / off, PostgreSQL / SQLite).
 */
export function ratios (atlas: Figures, peer: Figures): Record<string, number | null> {
  const r = (a: number | null | undefined, b: number | null | undefined): number | null =>
    a == null || b == null || b === 0 ? null : a / b
  return {
    'latency p50': r(atlas.latencyMs?.p50, peer.latencyMs?.p50),
    'latency p95': r(atlas.latencyMs?.p95, peer.latencyMs?.p95),
    'latency p99': r(atlas.latencyMs?.p99, peer.latencyMs?.p99),
    'latency max': r(atlas.latencyMs?.max, peer.latencyMs?.max),
    'delivered msg/s': r(atlas.deliveredPerSec, peer.deliveredPerSec),
    'server CPU µs/delivery': r(atlas.serverCpuMicrosPerDelivery, peer.serverCpuMicrosPerDelivery),
    'of which kernel µs/delivery': r(atlas.serverSystemMicrosPerDelivery, peer.serverSystemMicrosPerDelivery),
    'database CPU µs/delivery': r(atlas.databaseCpuMicrosPerDelivery, peer.databaseCpuMicrosPerDelivery),
    'server + database CPU µs/delivery': r(atlas.totalCpuMicrosPerDelivery, peer.totalCpuMicrosPerDelivery),
    'server RSS/connection': r(atlas.serverRssBytesPerConnection, peer.serverRssBytesPerConnection),
    'highest held rate': r(atlas.highestHeldRate, peer.highestHeldRate),
    'time to whole (storm)': r(atlas.wholeAfterMs, peer.wholeAfterMs)
  }
}

export interface TargetCheck { target: string, met: boolean | null, detail: string }

/** The targets that a scenario can judge, for Atlas against the peer of the same run. */
export function checkTargets (scenario: ScenarioName, atlas: Figures, peer: Figures | undefined): TargetCheck[] {
  const checks: TargetCheck[] = []
  const clean = atlas.lost === 0 && atlas.duplicated === 0 && atlas.outOfOrder === 0 && atlas.foreign === 0
  checks.push({ target: 'zero lost, duplicated, reordered', met: clean, detail: `lost ${atlas.lost}, dup ${atlas.duplicated}, out of order ${atlas.outOfOrder}` })
  const ratio = peer === undefined ? undefined : ratios(atlas, peer)
  const judge = (target: string, value: number | null | undefined, ok: (v: number) => boolean, show: (v: number) => string): void => {
    checks.push(value == null ? { target, met: null, detail: 'no comparison (peer not run or no figure)' } : { target, met: ok(value), detail: show(value) })
  }
  if (scenario === 'seed') {
    judge('p99 ≤ Socket.IO p99', ratio?.['latency p99'], (v) => v <= 1, (v) => `${v.toFixed(2)}×`)
  }
  if (scenario === 'seed' || scenario === 'wide') {
    // With the database's own processes (PostgreSQL): the same cost as on SQLite, where that work is in the servers.
    judge('server CPU/delivery ≤ 0.6× Socket.IO', ratio?.['server + database CPU µs/delivery'], (v) => v <= 0.6, (v) => `${v.toFixed(2)}×`)
  }
  if (scenario === 'saturation') {
    judge('highest held rate ≥ 1.5× Socket.IO', ratio?.['highest held rate'], (v) => v >= 1.5, (v) => `${v.toFixed(2)}×`)
  }
  if (scenario === 'storm') {
    checks.push({ target: 'every client whole within 2 s', met: atlas.wholeAfterMs != null && atlas.wholeAfterMs <= 2000, detail: atlas.wholeAfterMs == null ? 'never whole' : `${atlas.wholeAfterMs.toFixed(0)} ms` })
  }
  if (scenario === 'idle') {
    const perConnection = atlas.serverRssBytesPerConnection
    checks.push({ target: '≤ 10 KB server memory per idle connection', met: perConnection != null && perConnection <= 10 * 1024, detail: perConnection == null ? 'not measured' : `${(perConnection / 1024).toFixed(1)} KB` })
  }
  return checks
}

/** Issue 14's budget for the metrics: at most this much more server CPU per delivery than without. */
export const METRICS_COST_LIMIT = 0.05

/** Atlas with metrics against Atlas without, on server CPU per delivery (seed and wide). */
export function checkMetricsCost (on: Figures, off: Figures): TargetCheck {
  const target = `metrics add ≤ ${METRICS_COST_LIMIT * 100} % to server CPU/delivery`
  const a = on.serverCpuMicrosPerDelivery
  const b = off.serverCpuMicrosPerDelivery
  if (a == null || b == null || b === 0) return { target, met: null, detail: 'no CPU figure' }
  const added = a / b - 1
  return { target, met: added <= METRICS_COST_LIMIT, detail: `${a.toFixed(1)} vs ${b.toFixed(1)} µs: ${(a / b).toFixed(3)}× (${added >= 0 ? '+' : ''}${(added * 100).toFixed(1)} %)` }
}
