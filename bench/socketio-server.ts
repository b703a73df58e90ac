/**
 * The peer the bench compares Atlas Realtime with: the established way to do the same job.
 * Fastify (the same HTTP stack as Atlas) takes `POST /teams/:teamId/tasks`, writes the task to
 * SQLite (better-sqlite3, WAL, the file shared by every process of the peer), then emits it to
 * the team's Socket.IO room; @socket.io/redis-adapter carries the emit to the other processes.
 * Clients authenticate with the same HS256 JWT (claims `sub`, `teams`) in the handshake,
 * verified by the example app's own authenticator.
 *
 * Env: PORT, DATABASE_PATH, REDIS_URL, JWT_SECRET; SIO_RECOVERY=1 turns on Socket.IO's
 * connection-state recovery (used by the reconnect-storm scenario to show what it delivers).
 */
import { randomUUID } from 'node:crypto'
import Database from 'better-sqlite3'
import Fastify, { type FastifyRequest } from 'fastify'
import { Redis } from 'ioredis'
import { Server, type Socket } from 'socket.io'
import { createAdapter } from '@socket.io/redis-adapter'
import { jwtAuthenticator } from '../examples/jwt-auth.js'
import type { Principal } from '../lib/types.js'


const port = Number(process.env.PORT ?? 3100)
const databasePath = process.env.DATABASE_PATH ?? 'socketio-bench.db'
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
// The example app's own authenticator: both systems pay exactly the same for verifying a JWT.
const verify = jwtAuthenticator(process.env.JWT_SECRET ?? 'bench-secret')
const TEAM = /^[A-Za-z0-9_-]{1,64}$/

const db = new Database(databasePath, { timeout: 5000 })
db.pragma('journal_mode = WAL')
db.pragma('synchronous = NORMAL')
db.exec(`CREATE TABLE IF NOT EXISTS tasks (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  team_id TEXT NOT NULL,
  title TEXT NOT NULL,
  description TEXT NOT NULL DEFAULT '',
  status TEXT NOT NULL DEFAULT 'todo',
  assignee TEXT,
  due_date TEXT,
  version INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  updated_by TEXT NOT NULL
)`)
const insert = db.prepare(`INSERT INTO tasks (id, team_id, title, description, status, assignee, due_date, version, created_at, updated_at, updated_by)
  VALUES (@id, @teamId, @title, @description, @status, @assignee, @dueDate, 1, @now, @now, @actor)`)
// IMMEDIATE like Atlas's repository: two processes writing one file never deadlock on lock upgrade.
const createTask = db.transaction((row: Record<string, unknown>) => insert.run(row)).immediate

/** Verifies a bearer token given outside an HTTP request (the Socket.IO handshake). */
async function authenticate (token: unknown): Promise<Principal | null> {
  if (typeof token !== 'string') return null
  return await verify({ headers: { authorization: `Bearer ${token}` }, query: {}, ws: false } as unknown as FastifyRequest)
}

const app = Fastify({ logger: false })
// Redis pub/sub between the processes: one publishing and one subscribed connection, as the adapter wants.
const pub = new Redis(redisUrl, { lazyConnect: false })
const sub = pub.duplicate()
const io = new Server(app.server, {
  transports: ['websocket'],
  serveClient: false,
  perMessageDeflate: false,
  adapter: createAdapter(pub, sub),
  ...(process.env.SIO_RECOVERY === '1' ? { connectionStateRecovery: { maxDisconnectionDuration: 120_000 } } : {})
})

io.use((socket, next) => {
  const { auth, query } = socket.handshake
  authenticate((auth as { token?: unknown }).token ?? query.access_token).then((principal) => {
    if (principal === null) { next(new Error('unauthorized')); return }
    const asked = typeof query.teams === 'string' ? query.teams.split(',').filter((t) => t !== '') : principal.teams
    if (!asked.every((t) => TEAM.test(t) && principal.teams.includes(t))) { next(new Error('forbidden team')); return }
    socket.data.teams = asked
    next()
  }, next)
})

io.on('connection', (socket: Socket) => {
  const teams = socket.data.teams as string[]
  // A recovered session is already back in its rooms.
  if (!socket.recovered) void socket.join(teams)
  socket.emit('subscribed', { teams, recovered: socket.recovered })
})

declare module 'fastify' { interface FastifyRequest { principal: Principal | null } }
app.decorateRequest('principal', null)

app.post('/teams/:teamId/tasks', {
  schema: {
    params: { type: 'object', properties: { teamId: { type: 'string', pattern: TEAM.source } }, required: ['teamId'] },
    body: {
      type: 'object',
      additionalProperties: false,
      required: ['title'],
      properties: {
        title: { type: 'string', minLength: 1, maxLength: 200 },
        description: { type: 'string', maxLength: 10_000 },
        status: { type: 'string', enum: ['todo', 'in_progress', 'done'] }
      }
    }
  },
  onRequest: async (request: FastifyRequest, reply) => {
    request.principal = await verify(request)
    if (request.principal === null) return await reply.code(401).send({ error: 'unauthorized' })
    const { teamId } = request.params as { teamId: string }
    if (!request.principal.teams.includes(teamId)) return await reply.code(403).send({ error: 'forbidden' })
  }
}, async (request, reply) => {
  const { teamId } = request.params as { teamId: string }
  const body = request.body as { title: string, description?: string, status?: string }
  const actor = (request.principal as Principal).userId
  const now = Date.now()
  const at = new Date(now).toISOString()
  const task = {
    id: randomUUID(), teamId, title: body.title, description: body.description ?? '', status: body.status ?? 'todo',
    assignee: null, dueDate: null, version: 1, createdAt: at, updatedAt: at, updatedBy: actor
  }
  // Committed first, emitted second, as Atlas does. `seq` is the row's global insertion order:
  // increasing in commit order for every team, which lets clients detect reordering.
  const { lastInsertRowid } = createTask({ ...task, now, actor })
  const seq = Number(lastInsertRowid)
  io.to(teamId).emit('task', { type: 'task.created', teamId, seq, taskId: task.id, actor, at, mutationId: null, task })
  return await reply.code(201).send(task)
})

app.get('/health', async () => ({ ok: true, connections: io.engine.clientsCount }))

await app.listen({ port, host: '127.0.0.1' })

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    void io.close()
    app.close().then(() => { pub.disconnect(); sub.disconnect(); db.close(); process.exit(0) }, () => process.exit(1))
  })
}
