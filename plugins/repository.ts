import fp from 'fastify-plugin'
import type { FastifyPluginAsync } from 'fastify'
import { Type } from '@sinclair/typebox'
import { DATABASE_DEFAULTS, openDatabase } from '../lib/db/open.js'
import { TaskRepository } from '../lib/repository.js'
import { group, integer, optionsChecker, string, type OptionsOf } from './options.js'

export const AtlasRepositoryOptionsSchema = group({
  databasePath: string({ description: 'SQLite file (created with its folder if missing; opened in WAL mode), or `\':memory:\'`.' }),
  busyTimeoutMs: Type.Optional(integer({
    allowZero: true,
    default: DATABASE_DEFAULTS.busyTimeoutMs,
    description: 'How long a write waits for another process\'s lock before failing, in ms.'
  })),
  migrationsFolder: Type.Optional(string({ defaultText: 'the package\'s `drizzle/`', description: 'Drizzle migrations, applied at start-up.' })),
  checkpointIntervalMs: Type.Optional(integer({
    allowZero: true,
    default: DATABASE_DEFAULTS.checkpointIntervalMs,
    description: 'How often, in ms, a background thread (its own SQLite connection, `PRAGMA wal_checkpoint(PASSIVE)`) copies the WAL into the database file. The writing connection then never checkpoints, so no commit stalls the event loop copying pages and fsyncing (that stall was the largest cause of p99 latency). If the thread fails, a warning is logged and SQLite\'s own checkpoints take over again. `0`: SQLite checkpoints inside commits, as usual.'
  }))
}, { $id: 'AtlasRepositoryOptions', description: 'Options of atlasRepository.', example: '{ databasePath: "./atlas.db" }' })

export type AtlasRepositoryOptions = OptionsOf<typeof AtlasRepositoryOptionsSchema>

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
  const database = openDatabase({
    path: options.databasePath,
    busyTimeoutMs: options.busyTimeoutMs,
    migrationsFolder: options.migrationsFolder,
    checkpointIntervalMs: options.checkpointIntervalMs,
    onCheckpointFailure: (err) => { fastify.log.warn({ err }, 'atlas: WAL checkpoint thread failed; SQLite checkpoints on commit again') }
  })
  fastify.decorate('taskRepository', new TaskRepository(database.db))
  fastify.addHook('onClose', async () => { await database.close() })
}

export const atlasRepository = fp(repositoryPlugin, { fastify: '5.x', name: NAME })
export default atlasRepository
