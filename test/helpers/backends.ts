import type { Test } from 'tap'
import { basename, join } from 'node:path'
import { openRepository, type OpenedRepository, type OpenRepositoryOptions } from '../../lib/open-repository.js'
import type { TaskRepository } from '../../lib/repository.js'
import { createTestDatabase } from './postgres.js'

// One suite, two backends: a test that takes a `Backend` runs against SQLite (a file in its own
// test directory) and against the PostgreSQL server (a database of its own, created for it and
// dropped when it ends).

export type Backend = 'sqlite' | 'postgresql'
export const BACKENDS: readonly Backend[] = ['sqlite', 'postgresql']

interface TestLike { teardown (fn: () => unknown): void, testdir (): string, name: string }

let databases = 0

/** Where a test's database is: the example's config keys (`databasePath` or `databaseUrl`). */
export type DatabaseConfig = { databasePath: string, databaseUrl?: undefined } | { databaseUrl: string, databasePath?: undefined }

/** A fresh, empty database of this test on `backend`. Open it as often as the test needs: every opening shares it. */
export async function testDatabase (t: TestLike, backend: Backend): Promise<DatabaseConfig> {
  if (backend === 'sqlite') return { databasePath: join(t.testdir(), `atlas-${++databases}.db`) }
  const file = basename(process.argv[1] ?? 'test', '.ts').replace(/[^a-z0-9]+/gi, '_').toLowerCase()
  return { databaseUrl: await createTestDatabase(t, `atlas_${file}_${process.pid}_${++databases}`.slice(0, 63)) }
}

/** The repository's options for a database of testDatabase(). */
export function repositoryOptions (database: DatabaseConfig): OpenRepositoryOptions {
  return database.databaseUrl === undefined ? { databasePath: database.databasePath } : { url: database.databaseUrl }
}

/** Opens a repository on the test's database (closed when the test ends). */
export async function openTestRepository (t: TestLike, database: DatabaseConfig, options: Omit<OpenRepositoryOptions, 'databasePath' | 'url'> = {}): Promise<OpenedRepository> {
  const opened = await openRepository({ ...repositoryOptions(database), ...options })
  t.teardown(async () => { await opened.close() })
  return opened
}

/**
 * Whether a committed event is out of the outbox (a broker took it and it was marked published),
 * read through the repository, as the relay sees it, on either backend. An event that was never
 * committed is not in the outbox either: check that it exists first.
 */
export async function isPublished (repository: TaskRepository, teamId: string, seq: number): Promise<boolean> {
  const outbox = await repository.unpublished(Number.MAX_SAFE_INTEGER, 100_000)
  return !outbox.some((event) => event.teamId === teamId && event.seq === seq)
}

/**
 * Runs `body` as one subtest per backend. `npm test` runs both; ATLAS_TEST_BACKENDS=sqlite (or
 * postgresql) narrows a run while working on one.
 */
export function eachBackend (t: Test, name: string, body: (t: Test, backend: Backend) => Promise<void>): void {
  const only = process.env.ATLAS_TEST_BACKENDS?.split(',')
  for (const backend of BACKENDS) {
    if (only !== undefined && !only.includes(backend)) continue
    t.test(`${name} [${backend}]`, async (sub) => { await body(sub, backend) })
  }
}
