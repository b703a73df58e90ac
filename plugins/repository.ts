import fp from 'fastify-plugin'
import type { FastifyPluginAsync } from 'fastify'
import { openDatabase } from '../lib/db/open.js'
import { TaskRepository } from '../lib/repository.js'
import { checkPositiveInteger, checkString } from './options.js'

export interface AtlasRepositoryOptions {
  /** SQLite file path (created with its folder if missing), or ':memory:'. */
  databasePath: string
  /** How long a write waits for another process's lock, in ms (default 5000). */
  busyTimeoutMs?: number
  /** Folder of the drizzle-kit migrations (default: the package's drizzle/). */
  migrationsFolder?: string
  /**
   * How often a background thread checkpoints the WAL into the database file, in ms (default
   * 1000). 0 leaves it to SQLite, which checkpoints inside a commit and so stalls the event loop.
   */
  checkpointIntervalMs?: number
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Tasks and each team's event log. Every mutation through it is broadcast. */
    taskRepository: TaskRepository
  }
}

const NAME = 'atlas-repository'

const repositoryPlugin: FastifyPluginAsync<AtlasRepositoryOptions> = async (fastify, options) => {
  checkString(NAME, 'databasePath', options.databasePath, { required: true })
  checkPositiveInteger(NAME, 'busyTimeoutMs', options.busyTimeoutMs, { allowZero: true })
  checkString(NAME, 'migrationsFolder', options.migrationsFolder)
  checkPositiveInteger(NAME, 'checkpointIntervalMs', options.checkpointIntervalMs, { allowZero: true })
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
