/**
 * The peer the bench compares Atlas Realtime with: the established way to do the same job.
 * Fastify (the same HTTP stack as Atlas) takes `POST /teams/:teamId/tasks`, writes the task to
 * the database shared by every process of the peer, then emits it to the team's Socket.IO room;
 * @socket.io/redis-adapter carries the emit to the other processes. Clients authenticate with
 * the same HS256 JWT (claims `sub`, `teams`) in the handshake, verified by the example app's
 * own authenticator.
 *
 * The database, as for the example app: PostgreSQL when DATABASE_URL is set (node-postgres, a
 * pool as large as Atlas's default), else the SQLite file DATABASE_PATH (better-sqlite3, WAL).
 * Either way one transaction per mutation inserts the task row and yields its order key `seq`.
 *
 * Env: PORT, DATABASE_URL or DATABASE_PATH, REDIS_URL, JWT_SECRET; SIO_RECOVERY=1 turns on
 * Socket.IO's connection-state recovery (used by the reconnect-storm scenario to show what it
 * delivers).
 */
import { randomUUID } from 'node:crypto'
import Database from 'better-sqlite3'
import Fastify, { type FastifyRequest } from 'fastify'
import { Redis } from 'ioredis'
import pg from 'pg'
import { Server, type Socket } from 'socket.io'
import { createAdapter } from '@socket.io/redis-adapter'
import { jwtAuthenticator } from '../examples/jwt-auth.js'
import type { Principal } from '../lib/types.js'

const port = Number(process.env.PORT ?? 3100)
const databaseUrl = process.env.DATABASE_URL || undefined
const databasePath = process.env.DATABASE_PATH ?? 'socketio-bench.db'
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
// The example app's own authenticator: both systems pay exactly the same for verifying a JWT.
const verify = jwtAuthenticator(process.env.JWT_SECRET ?? 'bench-secret')
const TEAM = /^[A-Za-z0-9_-]{1,64}$/
/**
 * PostgreSQL pool per process: Atlas's default poolSize, and its connect timeout (kept here
 * rather than imported: the peer depends on nothing of Atlas but the JWT check).
 */
const POOL = { max: 10, connectionTimeoutMillis: 5000 }

/** A task row as the route writes it. */
interface TaskRow {
  id: string
  teamId: string
  title: string
  description: string
  status: string
  now: number
  actor: string
}

interface TaskStore {
  /** Commits the row; resolves with its order key (increasing in commit order within a team). */
  insert (row: TaskRow): number | Promise<number>
  close (): Promise<void>
}

/**
 * SQLite: `seq` is the row's global insertion order, which the one write lock of the file makes
 * commit order, for every team at once.
 */
function sqliteStore (path: string): TaskStore {
  const db = new Database(path, { timeout: 5000 })
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
    VALUES (@id, @teamId, @title, @description, @status, NULL, NULL, 1, @now, @now, @actor)`)
  // IMMEDIATE like Atlas's repository: two processes writing one file never deadlock on lock upgrade.
  const createTask = db.transaction((row: TaskRow) => insert.run(row)).immediate
  return {
    insert: (row) => Number(createTask(row).lastInsertRowid),
    close: async () => { db.close() }
  }
}

/**
 * PostgreSQL: a sequence is handed out at insert, not at commit, so it would not tell commit
 * order. The team's counter row instead: taken in the task's transaction, its lock held to the
 * commit, so a team's seqs commit in order (as Atlas's team_sequences). Created by the first
 * process; the others start after it is ready.
 */
async function postgresStore (url: string): Promise<TaskStore> {
  const pool = new pg.Pool({ connectionString: url, ...POOL })
  // An idle connection that failed is replaced by the pool; unhandled, the error would end the process.
  pool.on('error', () => {})
  await pool.query(`CREATE TABLE IF NOT EXISTS team_seqs (team_id TEXT PRIMARY KEY, seq BIGINT NOT NULL);
    CREATE TABLE IF NOT EXISTS tasks (
      id TEXT PRIMARY KEY,
      team_id TEXT NOT NULL,
      seq BIGINT NOT NULL,
      title TEXT NOT NULL,
      description TEXT NOT NULL DEFAULT '',
      status TEXT NOT NULL DEFAULT 'todo',
      assignee TEXT,
      due_date TEXT,
      version INTEGER NOT NULL,
      created_at BIGINT NOT NULL,
      updated_at BIGINT NOT NULL,
      updated_by TEXT NOT NULL,
      UNIQUE (team_id, seq)
    )`)
  return {
    insert: async (row) => {
      const client = await pool.connect()
      try {
        await client.query('BEGIN')
        const { rows } = await client.query<{ seq: string }>(
          'INSERT INTO team_seqs (team_id, seq) VALUES ($1, 1) ON CONFLICT (team_id) DO UPDATE SET seq = team_seqs.seq + 1 RETURNING seq', [row.teamId])
        const seq = Number(rows[0].seq)
        await client.query(`INSERT INTO tasks (id, team_id, seq, title, description, status, assignee, due_date, version, created_at, updated_at, updated_by)
          VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL, 1, $7, $7, $8)`, [row.id, row.teamId, seq, row.title, row.description, row.status, row.now, row.actor])
        await client.query('COMMIT')
        return seq
      } catch (err) {
        await client.query('ROLLBACK').catch(() => {})
        throw err
      } finally {
        client.release()
      }
    },
    close: async () => { await pool.end() }
  }
}

const store = databaseUrl === undefined ? sqliteStore(databasePath) : await postgresStore(databaseUrl)

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
  // Committed first, emitted second, as Atlas does. `seq` increases in commit order within the
  // team, which lets clients detect reordering.
  const seq = await store.insert({ id: task.id, teamId, title: task.title, description: task.description, status: task.status, now, actor })
  io.to(teamId).emit('task', { type: 'task.created', teamId, seq, taskId: task.id, actor, at, mutationId: null, task })
  return await reply.code(201).send(task)
})

app.get('/health', async () => ({ ok: true, connections: io.engine.clientsCount }))

await app.listen({ port, host: '127.0.0.1' })

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    void io.close()
    app.close().then(async () => { pub.disconnect(); sub.disconnect(); await store.close(); process.exit(0) }).catch(() => process.exit(1))
  })
}
