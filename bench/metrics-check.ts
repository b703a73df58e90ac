/**
 * The counter check (issue 14, point 5): what Atlas's own metrics say against what the bench
 * saw. At the end of a run the orchestrator scrapes GET /metrics from every Atlas process; the
 * events the servers counted as written to sockets must be exactly the deliveries the load
 * generator's tracker counted, and the delivery-lag histogram's p99 is set beside the bench's
 * measured p99.
 */
import { request } from 'node:http'
import { decodeHistogram, latencyHistogram } from './histogram.js'
import { measuredWindows, type RunRecord } from './stats.js'

/** The figures of one scrape, summed over processes and over the `origin` label. */
export interface Scrape {
  /** atlas_events_delivered_total, every origin. */
  delivered: number
  deliveredByOrigin: Record<string, number>
  /** atlas_events_replayed_total: frames written from the log to resuming sockets (the storm). */
  replayed: number
  /** atlas_delivery_lag_seconds buckets: [upper bound in seconds, cumulative count], ascending, +Inf last. */
  lagBuckets: Array<[number, number]>
}

const PREFIX = 'atlas_'

/** Reads Prometheus's text exposition for the figures above (prom-client's output; no timestamps). */
export function parseMetrics (text: string): Scrape {
  const scrape: Scrape = { delivered: 0, deliveredByOrigin: {}, replayed: 0, lagBuckets: [] }
  const buckets = new Map<number, number>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line)
    if (match === null) continue
    const [, name, labelText = '', valueText] = match
    const value = Number(valueText)
    const labels: Record<string, string> = {}
    for (const m of labelText.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[m[1]] = m[2]
    if (name === `${PREFIX}events_delivered_total`) {
      scrape.delivered += value
      const origin = labels.origin ?? ''
      scrape.deliveredByOrigin[origin] = (scrape.deliveredByOrigin[origin] ?? 0) + value
    } else if (name === `${PREFIX}events_replayed_total`) {
      scrape.replayed += value
    } else if (name === `${PREFIX}delivery_lag_seconds_bucket`) {
      const le = labels.le === '+Inf' ? Infinity : Number(labels.le)
      buckets.set(le, (buckets.get(le) ?? 0) + value)
    }
  }
  scrape.lagBuckets = [...buckets].sort((a, b) => a[0] - b[0])
  return scrape
}

/** Sums scrapes of several processes (buckets by their bound). */
export function sumScrapes (scrapes: readonly Scrape[]): Scrape {
  return combine(scrapes, 1)
}

/** `end` minus `start`: what happened between two scrapes of the same processes. */
export function difference (end: Scrape, start: Scrape): Scrape {
  return combine([end, start], -1)
}

function combine (scrapes: readonly Scrape[], signOfRest: 1 | -1): Scrape {
  const out: Scrape = { delivered: 0, deliveredByOrigin: {}, replayed: 0, lagBuckets: [] }
  const buckets = new Map<number, number>()
  scrapes.forEach((s, i) => {
    const sign = i === 0 ? 1 : signOfRest
    out.delivered += sign * s.delivered
    out.replayed += sign * s.replayed
    for (const [origin, n] of Object.entries(s.deliveredByOrigin)) out.deliveredByOrigin[origin] = (out.deliveredByOrigin[origin] ?? 0) + sign * n
    for (const [le, n] of s.lagBuckets) buckets.set(le, (buckets.get(le) ?? 0) + sign * n)
  })
  out.lagBuckets = [...buckets].sort((a, b) => a[0] - b[0])
  return out
}

/** GET /metrics of one process on 127.0.0.1. */
export async function scrapeOne (port: number, path = '/metrics', timeoutMs = 5000): Promise<Scrape> {
  const text = await new Promise<string>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, timeout: timeoutMs }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => { body += chunk })
      res.on('end', () => {
        if (res.statusCode === 200) resolve(body)
        else reject(new Error(`GET ${path} on port ${port} answered ${res.statusCode}`))
      })
      res.on('error', reject)
    })
    req.once('error', reject)
    req.once('timeout', () => { req.destroy(new Error(`GET ${path} on port ${port}: no answer in ${timeoutMs} ms`)) })
    req.end()
  })
  return parseMetrics(text)
}

/** Every process's /metrics, summed. */
export async function scrapeAll (ports: readonly number[]): Promise<Scrape> {
  return sumScrapes(await Promise.all(ports.map(async (p) => await scrapeOne(p))))
}

/** The bucket of cumulative `buckets` holding quantile `q`: (lower, upper] in seconds; null when empty. */
export function quantileBucket (buckets: ReadonlyArray<[number, number]>, q: number): { lower: number, upper: number, count: number } | null {
  const total = buckets.at(-1)?.[1] ?? 0
  if (total <= 0) return null
  const rank = q * total
  let lower = 0
  for (const [le, cumulative] of buckets) {
    if (cumulative >= rank) return { lower, upper: le, count: total }
    lower = le
  }
  return null
}

/** What the orchestrator keeps from the scrapes of one Atlas run (in the results JSON). */
export interface RunScrapes {
  /** Taken just before the /proc sample of each `<window>:start` mark and just after each `<window>:end`. */
  marks: Record<string, Scrape>
  /** After the load generator finished (clients closed), before the servers stop. */
  end: Scrape
}

export interface CounterCheck {
  processes: number
  /** atlas_events_delivered_total + atlas_events_replayed_total over every process, whole run. */
  scraped: number
  scrapedByOrigin: Record<string, number>
  scrapedReplayed: number
  /** The tracker's count of frames received by the bench's clients, whole run (warm-up included). */
  bench: number
  equal: boolean
  lag: LagCheck | null
}

export interface LagCheck {
  /** Server-side delivery lag, summed over processes and origins, measured windows only. */
  serverP99Bucket: { lowerMs: number, upperMs: number }
  /** Observations in those windows: one per event per process (not per socket). */
  serverObservations: number
  /** The bench's p99 over the same windows: request sent → event received, per delivery. */
  benchP99Ms: number
  /** |bench p99 − the server bucket's upper bound|, ms. */
  differenceMs: number
  /** Bucket width (upper − lower), ms: the resolution the histogram has. */
  bucketWidthMs: number
  /** Whether the difference is within the bucket's width. */
  agree: boolean
  /**
   * The bench's p99 from the event's `at` (its transaction's start, whole ms) to receipt: the
   * span nearest the server's, measured by the bench; null when the frames had no `at`.
   */
  sinceCommitP99Ms: number | null
  sinceCommitDifferenceMs: number | null
  sinceCommitAgree: boolean | null
}

/**
 * Compares a run's scrapes with the tracker. Counted by the bench: every event frame a client
 * received, distinct or duplicate, including frames of another team or that named no
 * mutation (the server wrote them all). Counted by the server: one per socket an event frame was
 * written to, live (`events_delivered_total`) or replayed on a resume (`events_replayed_total`).
 */
export function counterCheck (record: RunRecord, scrapes: RunScrapes, processes: number): CounterCheck {
  const windows = record.load.windows
  let bench = 0
  for (const w of windows) bench += w.delivered + w.duplicated
  // foreign and unknown are the tracker's running totals: the last window holds them all.
  const last = windows.at(-1)
  if (last !== undefined) bench += last.foreign + last.unknown
  const scraped = scrapes.end.delivered + scrapes.end.replayed
  return {
    processes,
    scraped,
    scrapedByOrigin: scrapes.end.deliveredByOrigin,
    scrapedReplayed: scrapes.end.replayed,
    bench,
    equal: scraped === bench,
    lag: lagCheck(record, scrapes)
  }
}

/**
 * The server's lag p99 against the bench's, over the windows the bench's figures count. Not
 * for the storm, whose latency runs from the reconnect and whose events come as replays (not
 * in the lag histogram).
 */
function lagCheck (record: RunRecord, scrapes: RunScrapes): LagCheck | null {
  if (record.scenario === 'storm' || record.scenario === 'idle') return null
  const windows = measuredWindows(record)
  const deltas: Scrape[] = []
  const latency = latencyHistogram()
  const sinceCommit = latencyHistogram()
  for (const w of windows) {
    const start = scrapes.marks[`${w.name}:start`]
    const end = scrapes.marks[`${w.name}:end`]
    if (start === undefined || end === undefined) return null
    deltas.push(difference(end, start))
    latency.add(decodeHistogram(w.latency))
    if (w.sinceCommit !== undefined) sinceCommit.add(decodeHistogram(w.sinceCommit))
  }
  const bucket = quantileBucket(sumScrapes(deltas).lagBuckets, 0.99)
  if (bucket === null || latency.totalCount === 0) return null
  const benchP99Ms = latency.getValueAtPercentile(99) / 1000
  const lowerMs = bucket.lower * 1000
  const upperMs = bucket.upper * 1000
  const bucketWidthMs = upperMs - lowerMs
  const differenceMs = Math.abs(benchP99Ms - upperMs)
  const sinceCommitP99Ms = sinceCommit.totalCount === 0 ? null : sinceCommit.getValueAtPercentile(99) / 1000
  const sinceCommitDifferenceMs = sinceCommitP99Ms === null ? null : Math.abs(sinceCommitP99Ms - upperMs)
  return {
    serverP99Bucket: { lowerMs, upperMs },
    serverObservations: bucket.count,
    benchP99Ms,
    differenceMs,
    bucketWidthMs,
    agree: differenceMs <= bucketWidthMs,
    sinceCommitP99Ms,
    sinceCommitDifferenceMs,
    sinceCommitAgree: sinceCommitDifferenceMs === null ? null : sinceCommitDifferenceMs <= bucketWidthMs
  }
}

const msText = (v: number): string => (v === Infinity ? '+Inf' : v >= 10 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v.toFixed(2))

/** The check's lines in the report. */
export function formatCounterCheck (c: CounterCheck): string[] {
  const origins = Object.entries(c.scrapedByOrigin).filter(([, n]) => n > 0).map(([o, n]) => `${o} ${n.toLocaleString('en-US')}`).join(', ')
  const lines = [`    counter check: scraped ${c.scraped.toLocaleString('en-US')} delivered = bench ${c.bench.toLocaleString('en-US')}: ${c.equal ? 'ok' : 'MISMATCH'}  (${c.processes} process(es); ${origins === '' ? 'none' : origins}${c.scrapedReplayed > 0 ? `, replayed ${c.scrapedReplayed.toLocaleString('en-US')}` : ''})`]
  if (c.lag === null) {
    lines.push('    lag check: n/a (no measured window with deliveries, or the storm: replays are not in the lag histogram)')
  } else {
    const l = c.lag
    const within = (agree: boolean, difference: number): string => (agree ? `within the bucket width (${msText(l.bucketWidthMs)} ms): agree` : `${msText(difference)} ms apart, more than the bucket width (${msText(l.bucketWidthMs)} ms)`)
    lines.push(`    lag check: server p99 in (${msText(l.serverP99Bucket.lowerMs)}, ${msText(l.serverP99Bucket.upperMs)}] ms (commit or broker receive → socket write; ${l.serverObservations.toLocaleString('en-US')} observations, one per event per process)`)
    lines.push(`      bench p99 ${msText(l.benchP99Ms)} ms (request sent → event received): ${within(l.agree, l.differenceMs)}`)
    if (l.sinceCommitP99Ms !== null && l.sinceCommitDifferenceMs !== null) {
      lines.push(`      bench p99 ${msText(l.sinceCommitP99Ms)} ms (event's \`at\` → received, the nearest span the bench can time): ${within(l.sinceCommitAgree === true, l.sinceCommitDifferenceMs)}`)
    }
  }
  return lines
}
