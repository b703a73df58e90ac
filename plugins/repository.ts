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
  const database = openDatabase({ path: options.databasePath, busyTimeoutMs: options.busyTimeoutMs, migrationsFolder: options.migrationsFolder })
  fastify.decorate('taskRepository', new TaskRepository(database.db))
  fastify.addHook('onClose', async () => { database.close() })
}

export const atlasRepository = fp(repositoryPlugin, { fastify: '5.x', name: NAME })
export default atlasRepository
