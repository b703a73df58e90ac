import type { EncodedHistogram } from './histogram.js'

/** The name of a window that prepares the measured one and is left out of the figures. */
export const WARM_UP = 'warm-up'

/**
 * The subjects under test: Atlas (the example app, metrics on as it ships), the same with
 * `METRICS=off` (what the metrics cost), and the Socket.IO peer.
 */
export type SystemName = 'atlas' | 'atlas-metrics-off' | 'socketio'

/** Which client speaks to a subject: both Atlas subjects are the same server to a client. */
export function protocolOf (system: SystemName): 'atlas' | 'socketio' {
  return system === 'socketio' ? 'socketio' : 'atlas'
}
/** The database a subject's servers share: one SQLite file, or one PostgreSQL database. */
export type BackendName = 'sqlite' | 'postgresql'
export type ScenarioName = 'seed' | 'wide' | 'saturation' | 'storm' | 'idle'

/** What one load-generator process is told to do (orchestrator -> load generator). */
export interface LoadPlan {
  system: SystemName
  scenario: ScenarioName
  /** HTTP/WebSocket ports of the system's server processes on 127.0.0.1. */
  ports: number[]
  jwtSecret: string
  /** Team count; team k is `bt<k>`. */
  teams: number
  /** Total clients of the run (across shards): client c is in team c % teams. */
  totalClients: number
  /** The slice of clients this process holds: [firstClient, firstClient + clients). */
  firstClient: number
  clients: number
  /** Connections opened at once while setting up (the storm reconnects all at once regardless). */
  connectConcurrency: number
  rate: number
  mutations: number
  /** Mutations sent at `rate` before the measured window (seed, wide) and not counted in it. */
  warmup: number
  /** How long to wait after the last send for deliveries to complete. */
  drainMs: number
  saturation: { startRate: number, stepRate: number, stepSeconds: number, maxRate: number, p99LimitMs: number }
  storm: { warmPerTeam: number, perTeam: number, graceMs: number }
}

/** Delivery figures of one measured window (a run, a saturation step, a storm phase). */
export interface WindowResult {
  name: string
  /** Target send rate, mutations/s (0: as fast as allowed). */
  rate: number
  sent: number
  httpOk: number
  httpErrors: number
  /** Sends achieved per second over the sending time. */
  achievedRate: number
  expected: number
  /** Distinct deliveries, including late ones. */
  delivered: number
  /** Deliveries that arrived after the drain time (still counted in `delivered`, not lost). */
  late: number
  duplicated: number
  outOfOrder: number
  /** Events of a team the client is not in. */
  foreign: number
  /** Frames whose mutation could not be identified. */
  unknown: number
  latency: EncodedHistogram
  /** HTTP request to response of the window's mutations. */
  httpLatency: EncodedHistogram
  /** Atlas only: the event's `at` (its transaction's start, whole ms) to receipt, per delivery. */
  sinceCommit?: EncodedHistogram
  /** ms from the first send to the last delivery. */
  durationMs: number
  /** ms from the window's start until every expected delivery had arrived (null: never). */
  completeAfterMs: number | null
  /** Most HTTP requests in flight at once. */
  maxInflight: number
}

export interface LoadResult {
  connected: number
  connectFailures: number
  /** ms to open all connections at setup. */
  connectMs: number
  resyncs: number
  windows: WindowResult[]
  saturation?: { highestHeldRate: number, stoppedBecause: string }
  storm?: { reconnectedAfterMs: number | null, wholeAfterMs: number | null, recovered: number }
}

export type LoadMessage =
  | { type: 'progress', phase: string, connected: number, target: number, sent: number, delivered: number, expected: number }
  | { type: 'mark', name: string }
  | { type: 'result', result: LoadResult }
  | { type: 'failed', message: string }

export type OrchestratorMessage =
  | { type: 'plan', plan: LoadPlan }
  | { type: 'ack', name: string }
