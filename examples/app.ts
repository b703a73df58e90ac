import Fastify, { LogController, type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify'
import fastifyStatic from '@fastify/static'
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname } from 'node:path'
import type { ServerOptions as HttpsOptions } from 'node:https'
import { fileURLToPath } from 'node:url'
import { atlasAccessLog, atlasClientAssets, atlasRealtime, type AtlasRealtimeOptions } from '../plugins/index.js'
import { timingSafeEqual } from 'node:crypto'
import { Type, type Static } from '@sinclair/typebox'
import { TeamId } from '../protocol/schemas.js'
import { atlasOps } from '../plugins/ops.js'
import { jwtAuthenticator, jwtVerifier } from './jwt-auth.js'

export interface ExampleConfig {
  /** SQLite: the database file (one host). Give this or `databaseUrl`. */
  databasePath?: string
  /** PostgreSQL: a connection URL (several hosts). */
  databaseUrl?: string
  /** PostgreSQL's driver (default `pg`). */
  databaseDriver?: 'pg' | 'postgres'
  redisUrl?: string
  jwtSecret: string
  /** `true` logs to stdout at info; Fastify logger options (tests capture the log with a stream). */
  logger?: FastifyServerOptions['logger']
  /** Fastify's own two lines per request as well as the access line (tests of what Fastify logs). */
  fastifyRequestLogging?: boolean
  /** Extra options for the suite (tests tune timers with it). */
  realtime?: Partial<Omit<AtlasRealtimeOptions, 'authenticate' | 'database'>>
  /**
   * Development only: tokens of demo users, listed by GET /demo/tokens so the board page can
   * offer them. server.ts passes them only when it made up its own secret (no JWT_SECRET);
   * without this option the route does not exist.
   */
  demoTokens?: DemoToken[]
  /**
   * Serve HTTPS, and so WSS, with this key and certificate (PEM) instead of plain HTTP
   * (server.ts reads them from TLS_KEY and TLS_CERT). HTTP/1.1: the upgrade needs it.
   */
  https?: HttpsOptions
  /**
   * HSTS: responses to HTTPS requests carry `Strict-Transport-Security: max-age=<this>;
   * includeSubDomains` (default one year; `0` tells browsers to forget it). Never sent over
   * plain HTTP, where RFC 6797 has browsers ignore it.
   */
  hstsMaxAgeSeconds?: number
  /** Fastify's trustProxy: behind a proxy, request.ip, .protocol and .host come from X-Forwarded-*. */
  trustProxy?: FastifyServerOptions['trustProxy']
  /**
   * The operator's credential for the admin routes (`POST /admin/revocations`), sent as
   * `Authorization: Bearer …`. Without it those routes do not exist.
   */
  adminToken?: string
}

export interface DemoToken {
  userId: string
  teams: string[]
  token: string
}

/** The example Atlas API: the suite plus a page that shows a team's board live. */
export async function buildExampleApp (config: ExampleConfig): Promise<FastifyInstance> {
  const app = Fastify({
    logger: config.logger ?? false,
    // atlasAccessLog writes one line per request (never a query) instead of Fastify's two.
    logController: new LogController({ disableRequestLogging: config.fastifyRequestLogging !== true }),
    trustProxy: config.trustProxy ?? false,
    https: config.https ?? null
    // Only app.server's type differs between HTTP and HTTPS: nothing here uses it.
  }) as unknown as FastifyInstance
  const hsts = `max-age=${config.hstsMaxAgeSeconds ?? 31_536_000}; includeSubDomains`
  // request.protocol is 'https' on a TLS socket, or by X-Forwarded-Proto from a trusted proxy.
  app.addHook('onRequest', async (request, reply) => {
    if (request.protocol === 'https') reply.header('strict-transport-security', hsts)
  })
  await app.register(atlasRealtime, {
    // What an operator needs: /metrics, /health/live and /health/ready, 503 under overload.
    metrics: {},
    health: {},
    overload: {},
    ...config.realtime,
    authenticate: jwtAuthenticator(config.jwtSecret),
    // The same check of a bare token: open sockets take a fresh JWT without reconnecting.
    authenticateToken: jwtVerifier(config.jwtSecret),
    database: databaseOptions(config),
    broker: { ...config.realtime?.broker, redis: config.redisUrl }
  })
  await app.register(atlasAccessLog)
  const publicDir = findPublicDir()
  // The page: index.html, board.js and board.css, listed once at start-up (no catch-all route).
  await app.register(fastifyStatic, { root: publicDir, wildcard: false, ...revalidated })
  // The client SDK as the page loads it (board.js imports /sdk/client/index.js), from the installed
  // atlas-realtime-client package (here the client/ workspace).
  await app.register(atlasClientAssets, { prefix: '/sdk' })
  // The API documents `npm run docs` writes: the HTTP routes (OpenAPI) and the socket (AsyncAPI).
  const docsDir = findDir(['../docs', '../../docs'], 'asyncapi.json')
  for (const name of ['asyncapi.json', 'openapi.json']) {
    app.get(`/docs/${name}`, async (_request, reply) => await reply.sendFile(name, docsDir))
  }
  if (config.demoTokens !== undefined) {
    const tokens = config.demoTokens.map(({ userId, teams, token }) => ({ userId, teams, token }))
    app.get('/demo/tokens', async (_request, reply) => reply.header('cache-control', 'no-store').send({ users: tokens }))
  }
  if (config.adminToken !== undefined) await registerAdminRoutes(app, config.adminToken)
  // The readiness, with the connection count (older tooling of the example probes /health).
  app.get('/health', { logLevel: 'warn' }, async (_request, reply) => {
    const readiness = await app.atlasReadiness()
    if (!readiness.ready) reply.code(503)
    return { ok: readiness.ready, connections: app.atlasConnections.connectionCount, checks: readiness.checks }
  })
  return app
}

const RevocationBody = Type.Object({
  userId: Type.String({ minLength: 1, maxLength: 128 }),
  teamId: Type.Optional(TeamId)
}, { additionalProperties: false })

/**
 * An operator cuts a user off, or takes one team from them, on the sockets of every instance.
 * (A real API would also stop accepting the user's tokens; the example's JWTs simply run out.)
 */
async function registerAdminRoutes (app: FastifyInstance, adminToken: string): Promise<void> {
  const expected = Buffer.from(`Bearer ${adminToken}`)
  const isAdmin = (authorization: string | undefined): boolean => {
    const given = Buffer.from(authorization ?? '')
    return given.length === expected.length && timingSafeEqual(given, expected)
  }
  // Before the body is read: a stranger learns nothing, not even what the body should be.
  const adminOnly = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (isAdmin(request.headers.authorization)) return
    await reply.code(401).header('www-authenticate', 'Bearer realm="atlas-admin"')
      .send({ statusCode: 401, code: 'UNAUTHORIZED', error: 'Unauthorized', message: 'The admin token is required' })
  }
  app.post<{ Body: Static<typeof RevocationBody> }>('/admin/revocations', {
    onRequest: adminOnly,
    schema: { body: RevocationBody }
  }, async (request, reply) => {
    await app.atlasRevoke(request.body)
    return await reply.code(204).send()
  })
  await registerOpsRoutes(app, adminOnly)
}

/**
 * The operations page: GET /ops (the page itself holds no figures, so it is open; it asks for
 * the admin token) and GET /ops/stats, the latest figures of every instance (atlasOps), behind
 * the admin token. The page draws them with uPlot, served from node_modules.
 */
async function registerOpsRoutes (app: FastifyInstance, adminOnly: (request: FastifyRequest, reply: FastifyReply) => Promise<void>): Promise<void> {
  await app.register(atlasOps)
  app.get('/ops', async (_request, reply) => await reply.sendFile('ops.html'))
  // Polled every second by each open page: logged only when something is wrong.
  app.get('/ops/stats', { onRequest: adminOnly, logLevel: 'warn' }, async (_request, reply) => {
    return await reply.header('cache-control', 'no-store').send(app.atlasOpsStats())
  })
  const uplot = uplotDir()
  // Without uPlot installed (a production install skips dev dependencies) the page shows its table only.
  if (uplot === undefined) return
  for (const name of ['uPlot.iife.min.js', 'uPlot.min.css']) {
    app.get(`/ops/vendor/${name}`, async (_request, reply) => {
      if (name.endsWith('.js')) reply.type('text/javascript; charset=utf-8')
      return await reply.header('cache-control', 'no-cache').sendFile(name, uplot)
    })
  }
}

/** uPlot's dist/ folder, wherever npm put the package; undefined when it is not installed. */
function uplotDir (): string | undefined {
  try {
    // Its "main" is dist/uPlot.cjs.js.
    return dirname(createRequire(import.meta.url).resolve('uplot'))
  } catch {
    return undefined
  }
}

const revalidated = {
  cacheControl: false,
  setHeaders (reply: FastifyReply, path: string): void {
    // Always revalidated: a rebuilt SDK or an edited page is picked up on reload.
    reply.header('cache-control', 'no-cache')
    // The type RFC 9239 names (@fastify/send still says application/javascript).
    if (path.endsWith('.js')) reply.type('text/javascript; charset=utf-8')
  }
}

/** examples/public, both from the TypeScript source and from dist/. */
function findPublicDir (): string {
  return findDir(['./public', '../../examples/public'], 'index.html')
}

/** The first of `candidates` (relative to this file) that holds `file`. */
function findDir (candidates: string[], file: string): string {
  for (const relative of candidates) {
    const dir = fileURLToPath(new URL(relative, import.meta.url))
    if (existsSync(`${dir}/${file}`)) return dir
  }
  throw new Error(`example: cannot find ${file} in ${candidates.join(' or ')}`)
}

/** The suite's database options: PostgreSQL for a URL, else the SQLite file (no key left undefined). */
function databaseOptions ({ databasePath, databaseUrl, databaseDriver }: ExampleConfig): AtlasRealtimeOptions['database'] {
  if (databaseUrl === undefined) {
    if (databasePath === undefined) throw new TypeError('buildExampleApp: give databasePath (SQLite) or databaseUrl (PostgreSQL)')
    return { databasePath }
  }
  return databaseDriver === undefined ? { url: databaseUrl } : { url: databaseUrl, driver: databaseDriver }
}
