import pg from 'pg'

/**
 * The PostgreSQL server the tests use (a superuser, to create and drop their databases):
 * ATLAS_TEST_POSTGRES_URL, or the local one with trust authentication.
 */
export const POSTGRES_SERVER_URL = process.env.ATLAS_TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'

/** Runs one statement on the server's maintenance database, on a connection of its own. */
async function onServer (statement: string): Promise<void> {
  const client = new pg.Client({ connectionString: POSTGRES_SERVER_URL, connectionTimeoutMillis: 5000 })
  await client.connect()
  try {
    await client.query(statement)
  } finally {
    await client.end()
  }
}

/**
 * Creates an empty database `name` (any leftover of an earlier run dropped first) and drops it
 * when the test ends, whoever is still connected. Resolves to its URL.
 */
export async function createTestDatabase (t: { teardown (fn: () => unknown): void }, name: string): Promise<string> {
  if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new TypeError(`not a plain database name: ${name}`)
  await onServer(`drop database if exists ${name} with (force)`)
  await onServer(`create database ${name}`)
  t.teardown(async () => { await onServer(`drop database if exists ${name} with (force)`) })
  const url = new URL(POSTGRES_SERVER_URL)
  url.pathname = `/${name}`
  return url.href
}
