import { openDatabase, type OpenDatabaseOptions } from './db/open.js'
import { openPostgres, type PostgresDriver } from './db/postgres.js'
import { PostgresTaskRepository } from './postgres-repository.js'
import type { TaskRepository, TaskRepositoryOptions } from './repository.js'
import { SqliteTaskRepository } from './sqlite-repository.js'

export interface OpenRepositoryOptions extends TaskRepositoryOptions, Partial<Omit<OpenDatabaseOptions, 'path'>> {
  /** SQLite: the file, or ':memory:'. Exactly one of `databasePath` and `url`. */
  databasePath?: string
  /** PostgreSQL: a connection URL. */
  url?: string
  poolSize?: number
  connectTimeoutMs?: number
  statementTimeoutMs?: number
  /** PostgreSQL's driver: node-postgres (`pg`, the default) or postgres.js (`postgres`, an optional peer). */
  driver?: PostgresDriver
  /** PostgreSQL: told when an idle connection failed (the pool replaces it); never fatal. */
  onConnectionError?: (err: Error) => void
}

export interface OpenedRepository {
  repository: TaskRepository
  /** Closes the database the repository was opened on. */
  close (): Promise<void>
}

/**
 * Opens the database a deployment names, applies its migrations, and makes its repository:
 * SQLite for `databasePath`, PostgreSQL for `url`.
 */
export async function openRepository (options: OpenRepositoryOptions): Promise<OpenedRepository> {
  const { databasePath, url, now } = options
  if (url !== undefined) {
    const opened = await openPostgres({
      url,
      poolSize: options.poolSize,
      connectTimeoutMs: options.connectTimeoutMs,
      statementTimeoutMs: options.statementTimeoutMs,
      migrationsFolder: options.migrationsFolder,
      driver: options.driver,
      onError: options.onConnectionError
    })
    return { repository: new PostgresTaskRepository(opened.db, { now }), close: opened.close }
  }
  if (databasePath === undefined) throw new TypeError('openRepository: give databasePath (SQLite) or url (PostgreSQL)')
  const opened = openDatabase({ ...options, path: databasePath })
  return { repository: new SqliteTaskRepository(opened.db, { now }), close: opened.close }
}
