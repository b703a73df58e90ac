import pg from 'pg'
import { drizzle as drizzlePg } from 'drizzle-orm/node-postgres'
import { migrate as migratePg } from 'drizzle-orm/node-postgres/migrator'
import { DrizzleQueryError, sql, type SQL } from 'drizzle-orm'
import type { PgDatabase, PgQueryResultHKT, PgTransactionConfig } from 'drizzle-orm/pg-core'
import * as schema from './pg-schema.js'
import { packageMigrationsFolder } from './open.js'
import { redactUrl } from '../redact-url.js'
import { DatabaseUnavailableError, DatabaseUnreachableError } from '../errors.js'

declare const kAtlasPgDatabase: unique symbol
/**
 * An open PostgreSQL database, to hand to `new PostgresTaskRepository(db)`. Opaque for the same
 * reason as AtlasDatabase (lib/db/open.ts): no public declaration may name drizzle-orm's types.
 */
export interface AtlasPgDatabase { readonly [kAtlasPgDatabase]: true }

export type PostgresDriver = 'pg' | 'postgres'

/** The defaults of openPostgres's options. */
export const POSTGRES_DEFAULTS = { poolSize: 10, connectTimeoutMs: 5000, statementTimeoutMs: 10_000, driver: 'pg' } as const

export interface OpenPostgresOptions {
  /** `postgres://user:password@host:port/database` (libpq's URL form). */
  url: string
  /** Connections kept at most (default 10). */
  poolSize?: number
  /**
   * How long opening a connection may take, in ms (default 5000): start-up fails past it, and
   * so does a query while the server is unreachable, instead of waiting for it.
   */
  connectTimeoutMs?: number
  /** The longest a statement may run, lock waits included, in ms (default 10,000). */
  statementTimeoutMs?: number
  migrationsFolder?: string
  /**
   * `pg` (node-postgres, the default) or `postgres` (postgres.js, an optional peer dependency:
   * install it to use it).
   */
  driver?: PostgresDriver
  /**
   * Told when a connection failed while nobody was waiting on it (an idle connection the server
   * closed, a restart). The pool replaces it; without this the error is dropped, never thrown.
   */
  onError?: (err: Error) => void
}

export interface OpenedPostgres {
  db: AtlasPgDatabase
  driver: PostgresDriver
  /** Closes every connection; queries still running are waited for (at most the statement timeout). */
  close (): Promise<void>
}

/** The Drizzle database over the PostgreSQL schema, as both drivers make it. */
export type DrizzlePgDatabase = PgDatabase<PgQueryResultHKT, typeof schema>

/** A transaction of a DrizzlePgDatabase. */
export type PgTransaction = Parameters<Parameters<DrizzlePgDatabase['transaction']>[0]>[0]

/** Runs `fn` in one transaction (BEGIN … COMMIT, ROLLBACK when it throws) on a pooled connection. */
export type RunTransaction = <T>(fn: (tx: PgTransaction) => Promise<T>, config?: PgTransactionConfig) => Promise<T>

/** What the repository needs of an AtlasPgDatabase. */
export interface PgInternals {
  /** For single statements; transactions go through `transaction`. */
  drizzle: DrizzlePgDatabase
  transaction: RunTransaction
  driver: PostgresDriver
  connectTimeoutMs: number
}

const internals = new WeakMap<AtlasPgDatabase, PgInternals>()

/** The Drizzle database and settings behind an AtlasPgDatabase that openPostgres made. */
export function pgInternals (db: AtlasPgDatabase): PgInternals {
  const found = internals.get(db)
  if (found === undefined) throw new TypeError('atlas-realtime: not a database openPostgres opened')
  return found
}

/**
 * Key of the session-level advisory lock migrations run under: two instances starting at once
 * never both run them (the second waits, then finds them applied). Any fixed bigint; this one
 * spells "ATLASMIG".
 */
const MIGRATION_LOCK = 0x41544c41534d4947n

/** What one driver provides: the pool's database, and one dedicated connection for migrating. */
interface DriverSession {
  drizzle: DrizzlePgDatabase
  transaction: RunTransaction
  /** Runs `fn` on a connection of its own (no statement timeout: a migration may take long), then closes it. */
  dedicated: <T>(fn: (db: DrizzlePgDatabase, migrate: (folder: string) => Promise<void>) => Promise<T>) => Promise<T>
  /** Closes the connections, waiting at most `graceMs` for queries still running. */
  close: (graceMs: number) => Promise<void>
}

interface DriverSettings {
  url: string
  poolSize: number
  connectTimeoutMs: number
  statementTimeoutMs: number
  onError: (err: Error) => void
}

/**
 * Opens a pool of connections to PostgreSQL and brings its schema up to date (under an advisory
 * lock). Fails within `connectTimeoutMs` with an error coded ATLAS_ERR_DATABASE_UNREACHABLE
 * when the server cannot be reached.
 */
export async function openPostgres (options: OpenPostgresOptions): Promise<OpenedPostgres> {
  const driver = options.driver ?? POSTGRES_DEFAULTS.driver
  const settings: DriverSettings = {
    url: options.url,
    poolSize: options.poolSize ?? POSTGRES_DEFAULTS.poolSize,
    connectTimeoutMs: options.connectTimeoutMs ?? POSTGRES_DEFAULTS.connectTimeoutMs,
    statementTimeoutMs: options.statementTimeoutMs ?? POSTGRES_DEFAULTS.statementTimeoutMs,
    onError: options.onError ?? (() => {})
  }
  if (!URL.canParse(settings.url)) {
    // The drivers would throw Node's own TypeError, which carries the URL, password and all.
    throw unreachable(settings, Object.assign(new Error('Invalid URL'), { code: 'ERR_INVALID_URL' }))
  }
  const session = driver === 'pg' ? openPg(settings) : await openPostgresJs(settings)
  try {
    await reachable(session.drizzle, settings)
    const folder = options.migrationsFolder ?? packageMigrationsFolder('drizzle-pg')
    await session.dedicated(async (db, migrate) => {
      await db.execute(sql`select pg_advisory_lock(${sql.raw(MIGRATION_LOCK.toString())})`)
      try {
        await migrate(folder)
      } finally {
        await db.execute(sql`select pg_advisory_unlock(${sql.raw(MIGRATION_LOCK.toString())})`)
      }
    })
  } catch (err) {
    // A failed start-up has nothing worth waiting for (a connect attempt may still hang).
    await session.close(0).catch(() => {})
    throw err
  }
  const db = {} as AtlasPgDatabase
  internals.set(db, { drizzle: session.drizzle, transaction: session.transaction, driver, connectTimeoutMs: settings.connectTimeoutMs })
  return { db, driver, close: async () => { await session.close(settings.statementTimeoutMs) } }
}

/** How long start-up waits between two attempts to reach a server that refused or did not resolve. */
const REACH_RETRY_MS = 250

/**
 * A first query, bounded by the connect timeout. A refused or unresolved connection is tried
 * again until then (PostgreSQL may be starting next to this process, as in a compose file);
 * refused credentials or a missing database fail at once, retrying cannot help. Past the
 * timeout, or then, DatabaseUnreachableError.
 */
async function reachable (db: DrizzlePgDatabase, settings: DriverSettings): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  const deadline = Date.now() + settings.connectTimeoutMs
  const timedOut = new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), settings.connectTimeoutMs) })
  try {
    for (;;) {
      const answer = await Promise.race([db.execute(sql`select 1`).then(() => 'ok' as const, (err: unknown) => driverError(err)), timedOut])
      if (answer === 'ok') return
      if (answer === 'timeout') throw unreachable(settings, undefined)
      if (!isConnectionFailure(answer) || Date.now() + REACH_RETRY_MS >= deadline) throw unreachable(settings, answer)
      await new Promise((resolve) => setTimeout(resolve, REACH_RETRY_MS))
    }
  } finally {
    clearTimeout(timer)
  }
}

function unreachable (settings: DriverSettings, cause: Error | undefined): DatabaseUnreachableError {
  const address = redactUrl(settings.url)
  const code = (cause as NodeJS.ErrnoException | undefined)?.code
  let hint: string
  if (code === 'ERR_INVALID_URL') {
    hint = 'the URL cannot be parsed: percent-encode @, /, #, : and % in the user and the password'
  } else if (code === '28P01' || code === '28000') {
    hint = 'PostgreSQL refused the credentials: give the right user and password in the URL, postgres://user:password@host:port/database'
  } else if (code === '3D000') {
    hint = 'the database does not exist: create it, or correct its name in the URL'
  } else if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    hint = 'the host name does not resolve: correct the host in the URL'
  } else if (code === 'ECONNREFUSED') {
    hint = 'nothing accepts connections there: start PostgreSQL, or correct the host and port in the URL'
  } else if (cause === undefined) {
    hint = 'no answer: check the host, the port and any firewall between this process and PostgreSQL'
  } else {
    hint = 'check that PostgreSQL runs there and that the URL points at it'
  }
  const because = cause === undefined ? `no answer within ${settings.connectTimeoutMs} ms` : cause.message
  // Only the message and the code: a driver's error may carry its connection's parameters.
  let safeCause: Error | undefined
  if (cause !== undefined) {
    safeCause = Object.assign(new Error(cause.message), code === undefined ? {} : { code })
  }
  return new DatabaseUnreachableError('openPostgres', `cannot connect to PostgreSQL at ${address} (${because}): ${hint}; start-up waits at most ${settings.connectTimeoutMs} ms (option connectTimeoutMs)`, address, safeCause)
}

function openPg (settings: DriverSettings): DriverSession {
  const config: pg.PoolConfig = {
    connectionString: settings.url,
    connectionTimeoutMillis: settings.connectTimeoutMs,
    keepAlive: true
  }
  const pool = new pg.Pool({
    ...config,
    max: settings.poolSize,
    statement_timeout: settings.statementTimeoutMs,
    // The server ends a transaction left open (a stalled process holding a team's seq lock).
    idle_in_transaction_session_timeout: settings.statementTimeoutMs,
    // Past the server's own timeout, the server itself is not answering (a partition).
    query_timeout: settings.statementTimeoutMs + settings.connectTimeoutMs
  })
  // An idle client's failure reaches the pool's 'error'; a checked-out client's reaches only the
  // client, whose 'error' without a listener would end the process: listen on both.
  pool.on('error', settings.onError)
  pool.on('connect', (client) => { client.on('error', settings.onError) })
  return {
    drizzle: drizzlePg(pool, { schema }) as unknown as DrizzlePgDatabase,
    transaction: async (fn, config) => {
      // The connection checked out here, not by drizzle: drizzle's own transaction on a pool
      // never releases its connection when BEGIN fails (a connection that died while idle),
      // and pool.end() then waits for it forever.
      const client = await pool.connect()
      let failure: unknown
      try {
        return await (drizzlePg(client) as unknown as DrizzlePgDatabase).transaction(fn, config)
      } catch (err) {
        failure = err
        throw err
      } finally {
        // A connection that failed is closed, not pooled again.
        client.release(failure !== undefined && isConnectionFailure(failure))
      }
    },
    dedicated: async (fn) => {
      const client = new pg.Client(config)
      client.on('error', settings.onError)
      await client.connect()
      try {
        const db = drizzlePg(client, { schema })
        return await fn(db as unknown as DrizzlePgDatabase, async (folder) => { await migratePg(db, { migrationsFolder: folder }) })
      } finally {
        await client.end().catch(() => {})
      }
    },
    // pool.end() waits for checked-out clients, which the statement timeout bounds.
    close: async () => { if (!pool.ending) await pool.end() }
  }
}

/** postgres.js, an optional peer: loaded only when asked for. */
async function openPostgresJs (settings: DriverSettings): Promise<DriverSession> {
  let postgres: typeof import('postgres')
  let drizzleJs: typeof import('drizzle-orm/postgres-js').drizzle
  let migrateJs: typeof import('drizzle-orm/postgres-js/migrator').migrate
  try {
    postgres = (await import('postgres')).default
    drizzleJs = (await import('drizzle-orm/postgres-js')).drizzle
    migrateJs = (await import('drizzle-orm/postgres-js/migrator')).migrate
  } catch (err) {
    throw new Error('atlas-realtime: driver \'postgres\' needs the postgres package (npm install postgres)', { cause: err })
  }
  const config = {
    connect_timeout: settings.connectTimeoutMs / 1000,
    // Notices ("schema already exists, skipping") are not for the host's console.
    onnotice: () => {}
  }
  const client = postgres(settings.url, {
    ...config,
    max: settings.poolSize,
    connection: { statement_timeout: settings.statementTimeoutMs, idle_in_transaction_session_timeout: settings.statementTimeoutMs }
  })
  let ended = false
  const db = drizzleJs(client, { schema }) as unknown as DrizzlePgDatabase
  return {
    drizzle: db,
    transaction: async (fn, config) => await db.transaction(fn, config),
    dedicated: async (fn) => {
      // One connection: the lock, the migrations and the unlock all run on it.
      const one = postgres(settings.url, { ...config, max: 1 })
      try {
        const db = drizzleJs(one, { schema })
        return await fn(db as unknown as DrizzlePgDatabase, async (folder) => { await migrateJs(db, { migrationsFolder: folder }) })
      } finally {
        await one.end({ timeout: 0 }).catch(() => {})
      }
    },
    close: async (graceMs) => {
      if (ended) return
      ended = true
      await client.end({ timeout: graceMs / 1000 })
    }
  }
}

/** The rows of a raw `db.execute()`: node-postgres answers a result with `rows`, postgres.js an array. */
export async function rowsOf<T> (db: DrizzlePgDatabase, query: SQL): Promise<T[]> {
  const result = await db.execute(query) as unknown
  return (Array.isArray(result) ? result : (result as { rows: unknown[] }).rows) as T[]
}

/** SQLSTATE classes and codes, and driver codes, that say the connection (not the statement) failed. */
const UNAVAILABLE_CODES = new Set([
  '57P01', '57P02', '57P03', // admin shutdown, crash shutdown, cannot connect now
  '57014', // statement timeout: the server is too busy or a lock is held too long
  '53300', // too many connections
  '25006', // read-only transaction: a standby (failover in progress)
  'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH',
  // postgres.js's own
  'CONNECT_TIMEOUT', 'CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED'
])
/** node-postgres reports these with no code. */
const UNAVAILABLE_MESSAGES = /timeout expired|Connection terminated|Query read timeout|not queryable|Cannot use a pool after calling end/

/** The driver's own error under drizzle's DrizzleQueryError (which puts the query first). */
function driverError (err: unknown): Error {
  let current = err
  while (current instanceof DrizzleQueryError && current.cause instanceof Error) current = current.cause
  return current instanceof Error ? current : new Error(String(current))
}

/** Whether `err` says the database could not be reached or went away (not that a statement was wrong). */
export function isConnectionFailure (err: unknown): boolean {
  const driver = driverError(err)
  const code = (driver as NodeJS.ErrnoException).code
  if (typeof code === 'string' && (UNAVAILABLE_CODES.has(code) || code.startsWith('08'))) return true
  return UNAVAILABLE_MESSAGES.test(driver.message)
}

/** Whether retrying the whole transaction may succeed: a serialization failure or a deadlock. */
export function isRetryable (err: unknown): boolean {
  const code = (driverError(err) as NodeJS.ErrnoException).code
  return code === '40001' || code === '40P01'
}

/**
 * The error a repository method rejects with: a connection-level failure becomes
 * DatabaseUnavailableError (answered 503), with the driver's error as its cause; anything else
 * (the catalogue's errors: TaskNotFound, PreconditionFailed, …; a bug) passes through unchanged.
 */
export function databaseError (err: unknown): unknown {
  if (isConnectionFailure(err)) return new DatabaseUnavailableError(driverError(err))
  return err
}
