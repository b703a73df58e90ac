import type { BetterSQLite3Database } from 'drizzle-orm/better-sqlite3'
import type * as schema from './schema.js'

/**
 * The Drizzle database over the suite's schema: the repository's own view of an AtlasDatabase.
 * In a module of its own that no public declaration imports (see AtlasDatabase).
 */
export type DrizzleDatabase = BetterSQLite3Database<typeof schema>
