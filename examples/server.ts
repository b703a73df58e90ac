import { randomBytes } from 'node:crypto'
import { resolve } from 'node:path'
import { buildExampleApp } from './app.js'
import { signToken } from './jwt-auth.js'

const DEMO_USERS: Array<[string, string[]]> = [
  ['alice', ['red']],
  ['bob', ['red']],
  ['carol', ['blue']],
  ['dave', ['red', 'blue']]
]

const port = Number(process.env.PORT ?? 3000)
const host = process.env.HOST ?? '127.0.0.1'
const databasePath = resolve(process.env.DATABASE_PATH ?? 'data/atlas.db')
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

// Only a server that made up its own secret hands out demo tokens (GET /demo/tokens for the
// board page); with JWT_SECRET set there is no such route.
const demoTokens = configuredSecret === undefined
  ? await Promise.all(DEMO_USERS.map(async ([userId, teams]) => ({ userId, teams, token: await signToken(jwtSecret, userId, teams) })))
  : undefined

const app = await buildExampleApp({ databasePath, redisUrl, jwtSecret, logger: process.env.LOG !== 'off', demoTokens, realtime: { routes: { maxMutationsPerUser }, websocket: { maxConnectionsPerUser, allowedOrigins } } })
await app.listen({ port, host })

const base = `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${port}`
console.log(`\nAtlas Realtime example on ${base}  (database ${databasePath}, broker ${redisUrl === undefined ? 'in-process' : redisUrl})`)
if (demoTokens !== undefined) {
  console.log(`No JWT_SECRET set: development tokens for demo users (valid 12 h; also offered by the board page at ${base}/):`)
  for (const { userId, teams, token } of demoTokens) {
    console.log(`  ${userId.padEnd(6)} teams ${teams.join(',').padEnd(9)} ${base}/#token=${token}`)
  }
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => { app.close().then(() => process.exit(0), () => process.exit(1)) })
}
