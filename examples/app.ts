import Fastify, { type FastifyInstance, type FastifyReply, type FastifyServerOptions } from 'fastify'
import { readFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { atlasRealtime, type AtlasRealtimeOptions } from '../plugins/index.js'
import { jwtAuthenticator } from './jwt-auth.js'

export interface ExampleConfig {
  databasePath: string
  redisUrl?: string
  jwtSecret: string
  /** `true` logs to stdout at info; Fastify logger options (tests capture the log with a stream). */
  logger?: FastifyServerOptions['logger']
  /** Extra options for the suite (tests tune timers with it). */
  realtime?: Partial<Omit<AtlasRealtimeOptions, 'authenticate' | 'database'>>
  /**
   * Development only: tokens of demo users, listed by GET /demo/tokens so the board page can
   * offer them. server.ts passes them only when it made up its own secret (no JWT_SECRET);
   * without this option the route does not exist.
   */
  demoTokens?: DemoToken[]
}

export interface DemoToken {
  userId: string
  teams: string[]
  token: string
}

const PAGE_FILES: Record<string, string> = {
  '/': 'index.html',
  '/board.js': 'board.js',
  '/board.css': 'board.css'
}

const CONTENT_TYPES: Record<string, string> = {
  html: 'text/html; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  css: 'text/css; charset=utf-8',
  map: 'application/json; charset=utf-8'
}

/** The example Atlas API: the suite plus a page that shows a team's board live. */
export async function buildExampleApp (config: ExampleConfig): Promise<FastifyInstance> {
  const app = Fastify({
    // Logs URLs as they are: atlas-credentials already took the access_token out of them.
    logger: config.logger ?? false
  })
  await app.register(atlasRealtime, {
    ...config.realtime,
    authenticate: jwtAuthenticator(config.jwtSecret),
    database: { databasePath: config.databasePath },
    broker: { ...config.realtime?.broker, redis: config.redisUrl }
  })
  const publicDir = findPublicDir()
  for (const [route, file] of Object.entries(PAGE_FILES)) {
    app.get(route, async (_request, reply) => await sendFile(reply, `${publicDir}/${file}`))
  }
  // The client SDK as the browser loads it: the compiled ES modules of lib/client, as they are.
  app.get('/sdk/:file', async (request, reply) => {
    const { file } = request.params as { file: string }
    // Looked up per request so a build made after start-up is found.
    const sdkDir = findSdkDir()
    // Flat names only: nothing outside the SDK's own folder can be asked for.
    if (!/^[a-z][a-z0-9-]*\.js(\.map)?$/.test(file)) return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: 'No such SDK file' })
    if (sdkDir === undefined) {
      return reply.code(503).type('text/plain; charset=utf-8').send('The client SDK is not built: run `npm run build` (dist/lib/client is missing)')
    }
    return await sendFile(reply, `${sdkDir}/${file}`)
  })
  if (config.demoTokens !== undefined) {
    const tokens = config.demoTokens.map(({ userId, teams, token }) => ({ userId, teams, token }))
    app.get('/demo/tokens', async (_request, reply) => reply.header('cache-control', 'no-store').send({ users: tokens }))
  }
  app.get('/health', async () => ({ ok: true, connections: app.atlasRealtime.connectionCount }))
  return app
}

async function sendFile (reply: FastifyReply, path: string): Promise<FastifyReply> {
  let body: string
  try {
    body = await readFile(path, 'utf8')
  } catch {
    return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: 'Not found' })
  }
  const type = CONTENT_TYPES[path.slice(path.lastIndexOf('.') + 1)] ?? 'application/octet-stream'
  // Always revalidated: a rebuilt SDK or an edited page is picked up on reload.
  return reply.type(type).header('cache-control', 'no-cache').send(body)
}

/** dist/lib/client, both from the TypeScript source (examples/) and from dist/examples/. */
function findSdkDir (): string | undefined {
  for (const relative of ['../lib/client', '../dist/lib/client']) {
    const dir = fileURLToPath(new URL(relative, import.meta.url))
    if (existsSync(`${dir}/index.js`)) return dir
  }
  return undefined
}

/** examples/public, both from the TypeScript source and from dist/. */
function findPublicDir (): string {
  for (const relative of ['./public', '../../examples/public']) {
    const dir = fileURLToPath(new URL(relative, import.meta.url))
    if (existsSync(`${dir}/index.html`)) return dir
  }
  throw new Error('example: cannot find examples/public')
}
