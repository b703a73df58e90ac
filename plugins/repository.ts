import fp from 'fastify-plugin'
import type { FastifyPluginAsync } from 'fastify'
import { Type } from '@sinclair/typebox'
import { DATABASE_DEFAULTS } from '../lib/db/open.js'
import { openRepository } from '../lib/open-repository.js'
import { POSTGRES_DEFAULTS, type PostgresDriver } from '../lib/db/postgres.js'
import type { TaskRepository } from '../lib/repository.js'
import { OptionError } from '../lib/errors.js'
import { redactUrl } from '../lib/redact-url.js'
import { group, integer, optionsChecker, string, type OptionsOf } from './options.js'

export const AtlasRepositoryOptionsSchema = group({
  databasePath: Type.Optional(string({ description: 'SQLite: the file (created with its folder if missing; opened in WAL mode), or `\':memory:\'`. One host: every process of it shares the file. Give this or `url`.' })),
  url: Type.Optional(string({
    pattern: /^postgres(ql)?:\/\//,
    url: true,
    description: 'PostgreSQL: a connection URL, `postgres://user:password@host:5432/database` (percent-encode `@`, `/`, `#`, `:` and `%` in the user and password; `?sslmode=require` and the other libpq parameters node-postgres reads are passed on). Several hosts share it (README, "Deploying on several hosts"). Give this or `databasePath`.'
  })),
  poolSize: Type.Optional(integer({ default: POSTGRES_DEFAULTS.poolSize, description: 'PostgreSQL: connections this process keeps open at most.' })),
  connectTimeoutMs: Type.Optional(integer({
    default: POSTGRES_DEFAULTS.connectTimeoutMs,
    description: 'PostgreSQL: how long start-up waits for the server before failing with `ATLAS_ERR_DATABASE_UNREACHABLE`, and how long a query waits for a connection before failing with 503 `DATABASE_UNAVAILABLE`, in ms.'
  })),
  statementTimeoutMs: Type.Optional(integer({
    default: POSTGRES_DEFAULTS.statementTimeoutMs,
    description: 'PostgreSQL: the longest one statement may run, lock waits included, in ms; past it the request fails with 503 `DATABASE_UNAVAILABLE` and nothing is changed.'
  })),
  driver: Type.Optional(string({
    default: POSTGRES_DEFAULTS.driver,
    pattern: /^(pg|postgres)$/,
    description: 'PostgreSQL: the driver, `pg` (node-postgres) or `postgres` (postgres.js, an optional peer dependency: install it to use it). README "Deploying on several hosts" says why `pg` is the default.'
  })),
  busyTimeoutMs: Type.Optional(integer({
    allowZero: true,
    default: DATABASE_DEFAULTS.busyTimeoutMs,
    description: 'SQLite: how long a write waits for another process\'s lock before failing, in ms.'
  })),
  migrationsFolder: Type.Optional(string({ defaultText: 'the package\'s `drizzle/`', description: 'Drizzle migrations, applied at start-up (PostgreSQL: the package\'s `drizzle-pg/`; one host at a time, under an advisory lock).' })),
  checkpointIntervalMs: Type.Optional(integer({
    allowZero: true,
    default: DATABASE_DEFAULTS.checkpointIntervalMs,
    description: 'SQLite: how often, in ms, a background thread (its own SQLite connection, `PRAGMA wal_checkpoint(PASSIVE)`) copies the WAL into the database file. The writing connection then never checkpoints, so no commit stalls the event loop copying pages and fsyncing (that stall was the largest cause of p99 latency). If the thread fails, a warning is logged and SQLite\'s own checkpoints take over again. `0`: SQLite checkpoints inside commits, as usual.'
  }))
}, { $id: 'AtlasRepositoryOptions', description: 'Options of atlasRepository.', example: '{ databasePath: "./atlas.db" } or { url: "postgres://atlas@db/atlas" }' })

/** Where the database is: exactly one of `databasePath` (SQLite) and `url` (PostgreSQL). */
export type AtlasRepositoryOptions = Omit<OptionsOf<typeof AtlasRepositoryOptionsSchema>, 'databasePath' | 'url'> &
  ({ databasePath: string, url?: undefined } | { url: string, databasePath?: undefined })

declare module 'fastify' {
  interface FastifyInstance {
    /** Tasks and each team's event log. Every mutation through it is broadcast. */
    taskRepository: TaskRepository
  }
}

const NAME = 'atlas-repository'
const checkOptions = optionsChecker(NAME, AtlasRepositoryOptionsSchema)

const repositoryPlugin: FastifyPluginAsync<AtlasRepositoryOptions> = async (fastify, rawOptions) => {
  const options = checkOptions(rawOptions)
  if ((options.databasePath === undefined) === (options.url === undefined)) {
    throw new OptionError(NAME, 'give exactly one of databasePath (SQLite) and url (PostgreSQL)')
  }
  if (options.databasePath !== undefined && /^[a-z][a-z0-9+.-]*:\/\//i.test(options.databasePath)) {
    // It would open a SQLite file named after the URL, and the deployment would not be on PostgreSQL.
    throw new OptionError(NAME, `databasePath is a SQLite file, not a URL (got ${JSON.stringify(redactUrl(options.databasePath))}): give a PostgreSQL URL as url`)
  }
  const opened = await openRepository({
    ...options,
    // The pattern admitted only these two.
    driver: options.driver as PostgresDriver,
    onCheckpointFailure: (err) => { fastify.log.warn({ err }, 'atlas: WAL checkpoint thread failed; SQLite checkpoints on commit again') },
    onConnectionError: (err) => { fastify.log.warn({ err }, 'atlas: a PostgreSQL connection failed; queries reconnect') }
  })
  fastify.decorate('taskRepository', opened.repository)
  fastify.addHook('onClose', async () => { await opened.close() })
}

export const atlasRepository = fp(repositoryPlugin, { fastify: '5.x', name: NAME })
export default atlasRepository
