/**
 * The bench's PostgreSQL side: a fresh database per run on a local server (created before the
 * run's servers start, dropped after they stop), and the CPU of the server processes
 * (backends) that serve it, which the bench counts as it counts the SQLite work done inside
 * the servers themselves.
 */
import { spawnSync } from 'node:child_process'
import pg from 'pg'
import { redactUrl } from '../lib/redact-url.js'
import { sampleProcess, type ProcSample } from './procstat.js'

/** The local server the bench uses unless ATLAS_BENCH_POSTGRES_URL names another (trust auth). */
export const DEFAULT_POSTGRES_URL = 'postgres://postgres@127.0.0.1:5432'

/** The server URL with any password hidden, for printing (no trailing slash). */
export function redacted (url: string): string {
  return redactUrl(url).replace(/\/$/, '')
}

/** Creates and drops the bench's databases over one administrative connection. */
export class PostgresServer {
  readonly url: string
  #admin: pg.Client
  /** Databases created and not yet dropped: what an interrupted bench must still drop. */
  readonly #live = new Set<string>()
  #next = 0

  private constructor (url: string, admin: pg.Client) {
    this.url = url
    this.#admin = admin
  }

  /** Connects to the server's maintenance database; fails with a hint when it cannot. */
  static async connect (url: string): Promise<PostgresServer> {
    const admin = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 })
    // An idle connection the server closed must not take the bench down between runs.
    admin.on('error', () => {})
    try {
      await admin.connect()
    } catch (err) {
      throw new Error(`bench: cannot reach PostgreSQL at ${redacted(url)} (${(err as Error).message}); set ATLAS_BENCH_POSTGRES_URL, or run with --backends sqlite`)
    }
    return new PostgresServer(url, admin)
  }

  /** A new empty database; returns its name and its URL. */
  async createDatabase (label: string): Promise<{ name: string, url: string }> {
    // Lower case, digits and underscores only: a plain identifier, so quoting never matters.
    const name = `atlas_bench_${process.pid}_${this.#next++}_${label.toLowerCase().replace(/[^a-z0-9]+/g, '_')}`.slice(0, 63)
    await this.#admin.query(`CREATE DATABASE "${name}"`)
    this.#live.add(name)
    const url = new URL(this.url)
    url.pathname = `/${name}`
    return { name, url: url.href }
  }

  async dropDatabase (name: string): Promise<void> {
    // FORCE: a server killed mid-run may leave a connection the server has not noticed is gone.
    await this.#admin.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)
    this.#live.delete(name)
  }

  /** The process ids of the server's backends connected to `database` now. */
  async backendPids (database: string): Promise<number[]> {
    const { rows } = await this.#admin.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = $1', [database])
    return rows.map((r) => r.pid)
  }

  /**
   * The last resort when the process is exiting (an uncaught error: no more waiting on
   * promises): drops what is left with `psql`, where it is installed. Best effort.
   */
  dropLiveSync (): void {
    for (const name of this.#live) {
      spawnSync('psql', [this.url, '-qc', `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`], { stdio: 'ignore', timeout: 5000 })
    }
    this.#live.clear()
  }

  /** Drops every database still there, then closes; never throws (it runs on the way out). */
  async close (): Promise<void> {
    for (const name of [...this.#live]) await this.dropDatabase(name).catch(() => {})
    await this.#admin.end().catch(() => {})
  }
}

/**
 * CPU of the backends serving one database, as one running total. The set of backends changes
 * while a run goes on (pools open connections on demand and close idle ones), so the total
 * counts every backend ever seen: a new one with all its CPU (it was born after the previous
 * sample), one that exited with what it had used when last seen (what it used after that is
 * lost; pools keep their connections while busy, so that is little). RSS is not summed: the
 * backends share PostgreSQL's buffers.
 */
export class BackendCpu {
  readonly #server: PostgresServer
  readonly #database: string
  #pids: number[] = []
  readonly #last = new Map<number, ProcSample>()

  constructor (server: PostgresServer, database: string) {
    this.#server = server
    this.#database = database
  }

  /** Finds the backends connected now; call before `sample()`, which must not wait. */
  async refresh (): Promise<void> {
    this.#pids = await this.#server.backendPids(this.#database)
  }

  /** The running total, read from /proc now (synchronously, beside the other processes' samples). */
  sample (): ProcSample {
    for (const pid of this.#pids) {
      const s = sampleProcess(pid)
      // A backend that exited since refresh() reads as zeros: keep what it had.
      if (s.cpuMicros > 0 || !this.#last.has(pid)) this.#last.set(pid, s)
    }
    const sum: ProcSample = { cpuMicros: 0, systemMicros: 0, rssBytes: 0 }
    for (const s of this.#last.values()) {
      sum.cpuMicros += s.cpuMicros
      sum.systemMicros += s.systemMicros
    }
    return sum
  }
}
