import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { createSecureContext } from 'node:tls'
import { buildExampleApp } from './app.js'
import { signToken } from './jwt-auth.js'
import { redactUrl } from '../lib/redact-url.js'

const DEMO_USERS: Array<[string, string[]]> = [
  ['alice', ['red']],
  ['bob', ['red']],
  ['carol', ['blue']],
  ['dave', ['red', 'blue']]
]

const port = Number(process.env.PORT ?? 3000)
const host = process.env.HOST ?? '127.0.0.1'
// DATABASE_URL: PostgreSQL, for several hosts; otherwise the SQLite file DATABASE_PATH.
const databaseUrl = process.env.DATABASE_URL || undefined
const databasePath = databaseUrl === undefined ? resolve(process.env.DATABASE_PATH ?? 'data/atlas.db') : undefined
// DATABASE_DRIVER=postgres: postgres.js instead of node-postgres (the benchmark compares them).
const databaseDriver = process.env.DATABASE_DRIVER || undefined
if (databaseDriver !== undefined && databaseDriver !== 'pg' && databaseDriver !== 'postgres') throw new Error(`DATABASE_DRIVER must be pg or postgres (got ${JSON.stringify(databaseDriver)})`)
const redisUrl = process.env.REDIS_URL || undefined
const configuredSecret = process.env.JWT_SECRET
// With no secret configured, a fresh random one per start: the printed demo tokens work, and
// nobody can forge tokens for a server that was started without thinking about it.
const jwtSecret = configuredSecret ?? randomBytes(32).toString('hex')
// Mutations one user may make per minute (the task routes' maxMutationsPerUser; unset: its
// default). The benchmark raises it: its one writer user stands for a whole team's users.
const maxMutations = process.env.MAX_MUTATIONS_PER_USER
if (maxMutations !== undefined && maxMutations !== '' && !/^\d+$/.test(maxMutations)) {
  throw new Error(`MAX_MUTATIONS_PER_USER must be a non-negative integer (got ${JSON.stringify(maxMutations)})`)
}
const maxMutationsPerUser = maxMutations === undefined || maxMutations === '' ? undefined : Number(maxMutations)
// Sockets one user may hold on this instance (unset: the suite's default). The benchmark raises
// it: its clients share one token per team.
const maxConnections = process.env.MAX_CONNECTIONS_PER_USER
const maxConnectionsPerUser = maxConnections === undefined || maxConnections === '' ? undefined : Number(maxConnections)
// Pages of other origins allowed to open the socket, comma-separated (the own origin always is).
const allowedOrigins = (process.env.ALLOWED_ORIGINS ?? '').split(',').map((o) => o.trim()).filter((o) => o !== '')

// Behind a proxy: Fastify's trustProxy ('true': any peer; else comma-separated addresses or
// CIDRs of the proxies), so request.ip, .protocol and .host come from their X-Forwarded-*.
const trustProxy = parseTrustProxy(process.env.TRUST_PROXY)
// HTTPS and WSS when given a certificate and its key (PEM files); read now so that a wrong path
// stops the start with its name rather than as a TLS error at the first connection.
const https = tlsOptions()
const hstsMaxAge = process.env.HSTS_MAX_AGE
if (hstsMaxAge !== undefined && hstsMaxAge !== '' && !/^\d+$/.test(hstsMaxAge)) {
  throw new Error(`HSTS_MAX_AGE must be a number of seconds (got ${JSON.stringify(hstsMaxAge)})`)
}
const hstsMaxAgeSeconds = hstsMaxAge === undefined || hstsMaxAge === '' ? undefined : Number(hstsMaxAge)

// Only a server that made up its own secret hands out demo tokens (GET /demo/tokens for the
// board page); with JWT_SECRET set there is no such route.
const demoTokens = configuredSecret === undefined
  ? await Promise.all(DEMO_USERS.map(async ([userId, teams]) => ({ userId, teams, token: await signToken(jwtSecret, userId, teams) })))
  : undefined

// The operator's credential (the admin routes, the operations page). A development server that
// made up its own JWT secret makes one up too and prints it; with JWT_SECRET set and no
// ADMIN_TOKEN there are no admin routes.
const adminToken = process.env.ADMIN_TOKEN || (configuredSecret === undefined ? randomBytes(18).toString('base64url') : undefined)
if (adminToken !== undefined && adminToken.length < 16) throw new Error('ADMIN_TOKEN must be at least 16 characters')
// SIGTERM: readiness turns 503 at once, the process closes DRAIN_DELAY_MS later (give the load
// balancer two health-check intervals to stop sending new sockets here).
const drainDelay = process.env.DRAIN_DELAY_MS
if (drainDelay !== undefined && drainDelay !== '' && !/^\d+$/.test(drainDelay)) throw new Error(`DRAIN_DELAY_MS must be a non-negative integer (got ${JSON.stringify(drainDelay)})`)
const drainDelayMs = drainDelay === undefined || drainDelay === '' ? 0 : Number(drainDelay)

// METRICS=off: no /metrics and no prom-client work per event (the benchmark measures what the
// metrics cost against it). Health and overload protection stay on.
const metricsSwitch = process.env.METRICS ?? ''
if (!['', 'on', 'off'].includes(metricsSwitch)) throw new Error(`METRICS must be on or off (got ${JSON.stringify(metricsSwitch)})`)
const metrics = metricsSwitch === 'off' ? { metrics: false as const } : {}

const app = await buildExampleApp({ databasePath, databaseUrl, databaseDriver, redisUrl, jwtSecret, logger: process.env.LOG !== 'off', demoTokens, adminToken, https, hstsMaxAgeSeconds, trustProxy, realtime: { ...metrics, routes: { maxMutationsPerUser }, websocket: { maxConnectionsPerUser, allowedOrigins } } })
await app.listen({ port, host })

// The port listened on (PORT=0: one the system chose).
const address = app.server.address()
const listening = address !== null && typeof address === 'object' ? address.port : port
const base = `${https === undefined ? 'http' : 'https'}://${host === '0.0.0.0' ? '127.0.0.1' : host}:${listening}`
console.log(`\nAtlas Realtime example on ${base}  (database ${databaseUrl === undefined ? String(databasePath) : redactUrl(databaseUrl)}, broker ${redisUrl === undefined ? 'in-process' : redisUrl}${https === undefined ? '' : `, TLS with ${process.env.TLS_CERT}`})`)
if (demoTokens !== undefined) {
  console.log(`No JWT_SECRET set: development tokens for demo users (valid 12 h; also offered by the board page at ${base}/):`)
  for (const { userId, teams, token } of demoTokens) {
    console.log(`  ${userId.padEnd(6)} teams ${teams.join(',').padEnd(9)} ${base}/#token=${token}`)
  }
}

if (adminToken !== undefined && process.env.ADMIN_TOKEN === undefined) console.log(`Admin token for this run (the operations page ${base}/ops, POST /admin/revocations): ${adminToken}`)

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    app.atlasDrain()
    setTimeout(() => { app.close().then(() => process.exit(0), () => process.exit(1)) }, drainDelayMs)
  })
}

/**
 * TLS_CERT and TLS_KEY as Node's https options, or undefined when neither is set. TLS_CERT may
 * hold the certificate followed by its intermediates (a fullchain.pem): all are sent.
 */
function tlsOptions (): { cert: Buffer, key: Buffer } | undefined {
  const { TLS_CERT: certPath = '', TLS_KEY: keyPath = '' } = process.env
  if (certPath === '' && keyPath === '') return undefined
  if (certPath === '' || keyPath === '') {
    throw new Error(`TLS_CERT and TLS_KEY go together (PEM files: the certificate and its private key); only ${certPath === '' ? 'TLS_KEY' : 'TLS_CERT'} is set`)
  }
  const read = (variable: string, path: string): Buffer => {
    try {
      return readFileSync(path)
    } catch (err) {
      throw new Error(`${variable}: cannot read ${path}: ${(err as Error).message}`)
    }
  }
  const options = { cert: read('TLS_CERT', certPath), key: read('TLS_KEY', keyPath) }
  try {
    // What the server would do with them, now, to name the files when they do not fit.
    createSecureContext(options)
  } catch (err) {
    throw new Error(`TLS_CERT ${certPath} and TLS_KEY ${keyPath} are not a PEM certificate and its private key: ${(err as Error).message}`)
  }
  return options
}

function parseTrustProxy (value: string | undefined): boolean | string | undefined {
  if (value === undefined || value === '' || value === 'false') return undefined
  return value === 'true' ? true : value
}

