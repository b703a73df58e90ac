import Fastify, { type FastifyInstance } from 'fastify'
import { readFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { atlasRealtime, type AtlasRealtimeOptions } from '../plugins/index.js'
import { jwtAuthenticator } from './jwt-auth.js'

export interface ExampleConfig {
  databasePath: string
  redisUrl?: string
  jwtSecret: string
  logger?: boolean
  /** Extra options for the suite (tests tune timers with it). */
  realtime?: Partial<Omit<AtlasRealtimeOptions, 'authenticate' | 'database'>>
}

/** The example Atlas API: the suite plus a page that shows a team's board live. */
export async function buildExampleApp (config: ExampleConfig): Promise<FastifyInstance> {
  const app = Fastify({ logger: config.logger ?? false })
  await app.register(atlasRealtime, {
    ...config.realtime,
    authenticate: jwtAuthenticator(config.jwtSecret),
    database: { databasePath: config.databasePath },
    broker: { ...config.realtime?.broker, redis: config.redisUrl }
  })
  const publicDir = findPublicDir()
  const page = async (file: string, type: string) => await readFile(`${publicDir}/${file}`, 'utf8').then((body) => ({ body, type }))
  for (const [route, file, type] of [
    ['/', 'index.html', 'text/html; charset=utf-8'],
    ['/board.js', 'board.js', 'text/javascript; charset=utf-8']
  ] as const) {
    app.get(route, async (_request, reply) => {
      const { body } = await page(file, type)
      return reply.type(type).send(body)
    })
  }
  app.get('/health', async () => ({ ok: true, connections: app.atlasRealtime.connectionCount }))
  return app
}

/** examples/public, both from the TypeScript source and from dist/. */
function findPublicDir (): string {
  for (const relative of ['./public', '../../examples/public']) {
    const dir = fileURLToPath(new URL(relative, import.meta.url))
    if (existsSync(`${dir}/index.html`)) return dir
  }
  throw new Error('example: cannot find examples/public')
}
