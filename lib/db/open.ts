import Database from 'better-sqlite3'
import { drizzle } from 'drizzle-orm/better-sqlite3'
import { migrate } from 'drizzle-orm/better-sqlite3/migrator'
import { fileURLToPath } from 'node:url'
import { existsSync, mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import * as schema from './schema.js'
import { WalCheckpointer } from './checkpointer.js'

declare const kAtlasDatabase: unique symbol
/**
 * An open Atlas database, to hand to `new TaskRepository(db)`. Opaque on purpose: drizzle-orm's
 * own declarations do not compile under `skipLibCheck: false`, so no public declaration of the
 * package names them (use `OpenedDatabase.sqlite` for raw SQL).
 */
export interface AtlasDatabase { readonly [kAtlasDatabase]: true }

/** The committed SQLite migrations (drizzle/). */
export function defaultMigrationsFolder (): string {
  return packageMigrationsFolder('drizzle')
}

/**
 * A folder of committed drizzle-kit migrations at the package's root (`drizzle` for SQLite,
 * `drizzle-pg` for PostgreSQL), found relative to this file both in source and in dist/.
 */
export function packageMigrationsFolder (name: 'drizzle' | 'drizzle-pg'): string {
  for (const relative of [`../../${name}`, `../../../${name}`]) {
    const folder = fileURLToPath(new URL(relative, import.meta.url))
    if (existsSync(`${folder}/meta/_journal.json`)) return folder
  }
  throw new Error(`atlas-realtime: cannot find the ${name}/ migrations folder; pass migrationsFolder`)
}

/** The defaults of openDatabase's options (atlasRepository's options document them). */
export const DATABASE_DEFAULTS = { busyTimeoutMs: 5000, checkpointIntervalMs: 1000 } as const

export interface OpenDatabaseOptions {
  /** File path, or ':memory:'. */
  path: string
  /** How long a writer waits for another process's lock before failing, in ms. */
  busyTimeoutMs?: number
  migrationsFolder?: string
  /**
   * How often a background thread checkpoints the WAL, in ms (default 1000); 0 leaves
   * checkpoints to SQLite, inside the commit that fills the WAL, on the caller's thread.
   */
  checkpointIntervalMs?: number
  /** Told when the checkpoint thread failed (SQLite's own checkpoints then take over). */
  onCheckpointFailure?: (err: Error) => void
}

export interface OpenedDatabase {
  sqlite: Database.Database
  db: AtlasDatabase
  /** Closes the connection at once; resolves when the checkpoint thread has exited too. */
  close (): Promise<void>
}

export function openDatabase (options: OpenDatabaseOptions): OpenedDatabase {
  const { path, busyTimeoutMs = DATABASE_DEFAULTS.busyTimeoutMs, checkpointIntervalMs = DATABASE_DEFAULTS.checkpointIntervalMs } = options
  if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true })
  const sqlite = new Database(path, { timeout: busyTimeoutMs })
  if (path !== ':memory:') {
    // WAL lets readers in other processes go on while one writes; NORMAL is durable across
    // process crashes in WAL mode, which is the failure this library must survive.
    sqlite.pragma('journal_mode = WAL')
    sqlite.pragma('synchronous = NORMAL')
  }
  sqlite.pragma('foreign_keys = ON')
  const db = drizzle(sqlite, { schema })
  migrate(db, { migrationsFolder: options.migrationsFolder ?? defaultMigrationsFolder() })
  const checkpointer = path === ':memory:' || checkpointIntervalMs === 0
    ? undefined
    : new WalCheckpointer(sqlite, { path, intervalMs: checkpointIntervalMs, busyTimeoutMs, onFailure: options.onCheckpointFailure })
  return {
    sqlite,
    db: db as unknown as AtlasDatabase,
    close: async () => {
      if (sqlite.open) sqlite.close()
      await checkpointer?.close()
    }
  }
}
