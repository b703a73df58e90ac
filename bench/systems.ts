import type { ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { freePort, spawnTracked, stopChild, waitForHttp } from './processes.js'
import type { BackendName, SystemName } from './ipc.js'
import type { DriverName } from './config.js'

/** The compiled tree (dist/): this file is dist/bench/systems.js. */
const DIST = fileURLToPath(new URL('..', import.meta.url))

/** Per minute: 3,000 mutations/s for a minute is 180,000. */
const BENCH_MAX_MUTATIONS_PER_USER = 1_000_000
/** The clients of a team share one token: up to 200 sockets per user in the idle scenario. */
const BENCH_MAX_CONNECTIONS_PER_USER = 100_000

export const SYSTEM_LABEL: Record<SystemName, string> = { atlas: 'Atlas Realtime', 'atlas-metrics-off': 'Atlas Realtime, metrics off', socketio: 'Socket.IO + redis-adapter' }

export const BACKEND_LABEL: Record<BackendName, string> = { sqlite: 'SQLite', postgresql: 'PostgreSQL' }

/**
 * Whether the built example passes DATABASE_DRIVER on to its repository: without that, a
 * `--driver postgres` run would measure pg under postgres.js's name.
 */
export function exampleReadsDriver (): boolean {
  return readFileSync(`${DIST}examples/server.js`, 'utf8').includes('DATABASE_DRIVER')
}

export interface RunningSystem {
  ports: number[]
  pids: number[]
  stop (): Promise<void>
}

export interface StartOptions {
  /** SQLite: the file every process of the system shares. Give this or `databaseUrl`. */
  databasePath?: string
  /** PostgreSQL: the database every process of the system shares. */
  databaseUrl?: string
  /**
   * Atlas on PostgreSQL: its driver, as DATABASE_DRIVER (lib/open-repository.ts's `driver`).
   * The Socket.IO peer ignores it: it always uses pg.
   */
  driver?: DriverName
  redisUrl: string
  jwtSecret: string
  processes: number
  /** Extra node flags for the servers (e.g. --cpu-prof). */
  nodeFlags?: string[]
  /** Socket.IO only: turn on connection-state recovery. */
  recovery?: boolean
  /**
   * Atlas only: the example's default logging (LOG unset: one access line per request and the
   * connection logs, at info, to the server's stdout, which goes to /dev/null: written, not kept).
   * Default false (LOG=off). The Socket.IO peer logs nothing either way.
   */
  log?: boolean
}

/**
 * Starts a system as `processes` server processes on one database (SQLite file or PostgreSQL)
 * and one Redis. They start one after the other: the first creates the schema, the next find
 * it ready.
 */
export async function startSystem (system: SystemName, options: StartOptions): Promise<RunningSystem> {
  if ((options.databasePath === undefined) === (options.databaseUrl === undefined)) throw new TypeError('startSystem: give databasePath (SQLite) or databaseUrl (PostgreSQL)')
  const script = system === 'socketio' ? `${DIST}bench/socketio-server.js` : `${DIST}examples/server.js`
  const children: ChildProcess[] = []
  const ports: number[] = []
  const stop = async (): Promise<void> => { await Promise.all(children.map(async (c) => { await stopChild(c) })) }
  try {
    for (let i = 0; i < options.processes; i++) {
      const port = await freePort()
      const child = spawnTracked(process.execPath, [...(options.nodeFlags ?? []), script], {
        stdio: ['ignore', 'ignore', 'pipe'],
        env: {
          ...process.env,
          PORT: String(port),
          HOST: '127.0.0.1',
          // Both servers read DATABASE_URL first: the one not meant must not come from the parent.
          DATABASE_PATH: options.databasePath,
          DATABASE_URL: options.databaseUrl,
          DATABASE_DRIVER: options.databaseUrl === undefined ? undefined : options.driver,
          REDIS_URL: options.redisUrl,
          JWT_SECRET: options.jwtSecret,
          // Unset (the example's default) logs; the bench's parent environment must not decide it.
          LOG: options.log === true ? undefined : 'off',
          METRICS: system === 'atlas-metrics-off' ? 'off' : 'on',
          // The one writer user stands for a whole team's users (up to 3,000 mutations/s in
          // saturation): the limit is raised out of reach, not turned off, so its cost is measured.
          MAX_MUTATIONS_PER_USER: String(BENCH_MAX_MUTATIONS_PER_USER),
          MAX_CONNECTIONS_PER_USER: String(BENCH_MAX_CONNECTIONS_PER_USER),
          SIO_RECOVERY: options.recovery === true ? '1' : '0'
        }
      })
      // A server's dying words are worth showing; a healthy one says nothing on stderr.
      child.stderr?.on('data', (chunk: Buffer) => { process.stderr.write(`[${system} ${port}] ${chunk.toString()}`) })
      children.push(child)
      ports.push(port)
      await waitForHttp(port, '/health', child)
    }
  } catch (err) {
    await stop()
    throw err
  }
  return { ports, pids: children.map((c) => c.pid ?? 0), stop }
}
