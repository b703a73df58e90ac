import { defineConfig } from 'drizzle-kit'

// The PostgreSQL migrations (lib/db/postgres.ts applies them); drizzle.config.ts is SQLite's.
export default defineConfig({
  dialect: 'postgresql',
  schema: './lib/db/pg-schema.ts',
  out: './drizzle-pg'
})
