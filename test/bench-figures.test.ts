import t, { type Test } from 'tap'
import { decodeHistogram, encodeHistogram, latencyHistogram } from '../bench/histogram.js'
import { figuresOf, type RunRecord } from '../bench/stats.js'
import type { WindowResult } from '../bench/ipc.js'

// The bench's latency figures: what the load generator records (µs) travels encoded to the
// orchestrator, which merges the rounds and prints milliseconds.

function encoded (micros: number[]): string {
  const h = latencyHistogram()
  for (const v of micros) h.recordValue(v)
  return encodeHistogram(h)
}

function window (name: string, latencyMicros: number[], httpMicros: number[] = []): WindowResult {
  return {
    name,
    rate: 100,
    sent: latencyMicros.length,
    httpOk: latencyMicros.length,
    httpErrors: 0,
    achievedRate: 100,
    expected: latencyMicros.length,
    delivered: latencyMicros.length,
    late: 0,
    duplicated: 0,
    outOfOrder: 0,
    foreign: 0,
    unknown: 0,
    latency: encoded(latencyMicros),
    httpLatency: encoded(httpMicros),
    durationMs: 1000,
    completeAfterMs: 1000,
    maxInflight: 1
  }
}

function run (round: number, ...windows: WindowResult[]): RunRecord {
  return {
    scenario: 'seed',
    system: 'atlas',
    round,
    clients: 1,
    teams: 1,
    load: { connected: 1, connectFailures: 0, connectMs: 1, resyncs: 0, windows },
    samples: {}
  }
}

/** 1 µs to `n` µs, each once, shuffled order does not matter to a histogram. */
const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i)

/** Within HdrHistogram's 3 significant digits of `exact`, never below it (a bucket's upper edge). */
function near (t: Test, actual: number | undefined, exact: number, what: string): void {
  t.ok(actual !== undefined && actual >= exact && actual <= exact * 1.001, `${what}: ${actual} ≈ ${exact}`)
}

t.test('latency percentiles are printed in ms, within 0.1 % of the exact value, never above the max', async (t) => {
  // 1 ms to 20 ms in 1 µs steps, plus one 250 ms straggler.
  const micros = [...range(1000, 20_000), 250_000]
  const figures = figuresOf([run(1, window('seed', micros, range(500, 1500)))])
  const sorted = [...micros].sort((a, b) => a - b)
  const exact = (p: number): number => sorted[Math.ceil((p / 100) * sorted.length) - 1] / 1000
  near(t, figures.latencyMs?.p50, exact(50), 'p50')
  near(t, figures.latencyMs?.p95, exact(95), 'p95')
  near(t, figures.latencyMs?.p99, exact(99), 'p99')
  near(t, figures.latencyMs?.max, 250, 'max')
  t.ok((figures.latencyMs?.p99 ?? Infinity) <= (figures.latencyMs?.max ?? 0), 'p99 <= max')
  near(t, figures.httpLatencyMs?.p50, 1, 'HTTP p50')
  near(t, figures.httpLatencyMs?.p99, 1.49, 'HTTP p99')
})

t.test('rounds merge exactly: two halves give the figures of the whole', async (t) => {
  const whole = figuresOf([run(1, window('seed', range(1, 10_000)))])
  const halves = figuresOf([run(1, window('seed', range(1, 5000))), run(2, window('seed', range(5001, 10_000)))])
  t.same(halves.latencyMs, whole.latencyMs)
  near(t, whole.latencyMs?.p50, 5, 'p50 of 1 µs..10 ms')
})

t.test('warm-up windows count for nothing; no delivery gives no latency figure', async (t) => {
  const figures = figuresOf([run(1, window('warm-up', range(1, 100)), window('seed', []))])
  t.equal(figures.latencyMs, null)
  t.equal(figures.httpLatencyMs, null)
})

t.test('the encoding keeps every count', async (t) => {
  const h = latencyHistogram()
  for (const v of range(1, 3000)) h.recordValue(v * 7.5)
  const back = decodeHistogram(encodeHistogram(h))
  t.equal(back.totalCount, 3000)
  for (const p of [1, 50, 90, 99, 99.9, 100]) t.equal(back.getValueAtPercentile(p), h.getValueAtPercentile(p), `p${p}`)
})
