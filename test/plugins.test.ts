import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import fastifyWebsocket from '@fastify/websocket'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import {
  atlasAuth, atlasBroker, atlasHub, atlasRealtime, atlasRepository, atlasTaskRoutes, atlasWebSocket,
  Hub, MemoryBroker, MemoryBus, OutboxRelay, RealtimeServer, RedisBroker, RetentionPruner, SqliteTaskRepository, type AtlasRealtimeOptions
} from '../plugins/index.js'
import { startRedis } from './helpers/redis.js'

const principal = { userId: 'alice', teams: ['red'] }
const authenticate = async (): Promise<typeof principal> => principal

/** A bare Fastify instance of this test, closed when it ends. */
function bareApp (t: Test): FastifyInstance {
  const app = Fastify()
  t.teardown(async () => { await app.close() })
  return app
}

/** Valid umbrella options on a fresh database of this test, with `overrides` on top. */
function suiteOptions (t: Test, overrides: Record<string, unknown> = {}): AtlasRealtimeOptions {
  return { authenticate, database: { databasePath: join(t.testdir(), 'atlas.db') }, ...overrides } as AtlasRealtimeOptions
}

async function readySuite (t: Test, overrides?: Record<string, unknown>): Promise<FastifyInstance> {
  const app = bareApp(t)
  await app.register(atlasRealtime, suiteOptions(t, overrides))
  await app.ready()
  return app
}

t.test('bad options fail at registration with an error naming the plugin and the option', async (t) => {
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ['missing authenticate', { authenticate: undefined }, /^atlas-auth: option authenticate must be a function and is required \(got undefined\)$/],
    ['authenticate not a function', { authenticate: 'yes' }, /^atlas-auth: option authenticate must be a function and is required \(got string\)$/],
    ['missing database', { database: undefined }, /^atlas-realtime: option database is required/],
    ['database without a path or a URL', { database: {} }, /^atlas-repository: give exactly one of databasePath \(SQLite\) and url \(PostgreSQL\)/],
    ['database with both a path and a URL', { database: { databasePath: ':memory:', url: 'postgres://atlas@127.0.0.1/atlas' } }, /^atlas-repository: give exactly one of databasePath/],
    ['database URL of another kind', { database: { url: 'mysql://atlas@127.0.0.1/atlas' } }, /^atlas-repository: option url must be a non-empty string matching/],
    ['a PostgreSQL URL given as databasePath', { database: { databasePath: 'postgres://atlas:TopSecret@127.0.0.1/atlas' } }, /^atlas-repository: databasePath is a SQLite file, not a URL \(got "postgres:\/\/atlas:\*\*\*@127\.0\.0\.1\/atlas"\): give a PostgreSQL URL as url$/],
    ['a mistyped URL, its password hidden', { database: { url: 'postgress://atlas:TopSecret@db.internal/atlas' } }, /\(got "postgress:\/\/atlas:\*\*\*@db\.internal\/atlas"\)$/],
    ['a Redis URL that cannot be parsed, its password hidden', { broker: { redis: 'redis://:Top/Secret@127.0.0.1:6499' } }, /^atlas-broker: option redis is not a URL that can be parsed \(got "redis:\/\/:\*\*\*@127\.0\.0\.1:6499"\): percent-encode/],
    ['unknown PostgreSQL driver', { database: { url: 'postgres://atlas@127.0.0.1/atlas', driver: 'pg-native' } }, /^atlas-repository: option driver must be/],
    ['negative checkpoint interval', { database: { databasePath: ':memory:', checkpointIntervalMs: -5 } }, /^atlas-repository: option checkpointIntervalMs must be a non-negative integer \(got -5\)$/],
    ['heartbeatMs of 0', { websocket: { heartbeatMs: 0 } }, /^atlas-websocket: option heartbeatMs must be a positive integer \(got 0\)$/],
    ['heartbeatMs as a string', { websocket: { heartbeatMs: '30s' } }, /^atlas-websocket: option heartbeatMs must be a positive integer \(got "30s"\)$/],
    ['path without a leading slash', { websocket: { path: 'realtime' } }, /^atlas-websocket: option path must be a non-empty string matching/],
    ['redis as a number', { broker: { redis: 42 } }, /^atlas-broker: option redis must be a URL string or ioredis options \(got 42\)$/],
    ['redis and memoryBus together', { broker: { redis: 'redis://127.0.0.1:1', memoryBus: new MemoryBus() } }, /^atlas-broker: options redis and memoryBus exclude each other$/],
    ['retention not an object', { hub: { retention: 'forever' } }, /^atlas-hub: option retention must be an object$/],
    ['negative retention', { hub: { retention: { maxEventsPerTeam: -1 } } }, /^atlas-hub: option retention.maxEventsPerTeam must be a non-negative integer \(got -1\)$/],
    ['fractional retention age', { hub: { retention: { maxEventAgeMs: 1.5 } } }, /^atlas-hub: option retention.maxEventAgeMs must be a non-negative integer \(got 1.5\)$/],
    ['routes prefix without a leading slash', { routes: { prefix: 'api' } }, /^atlas-task-routes: option prefix must be a non-empty string matching/]
  ]
  for (const [name, overrides, message] of cases) {
    const app = bareApp(t)
    await t.rejects(async () => {
      await app.register(atlasRealtime, suiteOptions(t, overrides))
      await app.ready()
    }, { name: 'TypeError', message }, name)
  }
})

t.test('each plugin declares its dependencies: registered alone, it fails naming the missing one', async (t) => {
  const cases: Array<[string, (app: FastifyInstance) => Promise<unknown>, string, string]> = [
    ['atlasWebSocket without atlas-hub', async (app) => {
      await app.register(fastifyWebsocket)
      await app.register(atlasAuth, { authenticate })
      await app.register(atlasWebSocket)
    }, 'atlas-hub', 'atlas-websocket'],
    ['atlasWebSocket without @fastify/websocket', async (app) => {
      await app.register(atlasRepository, { databasePath: join(t.testdir(), 'ws.db') })
      await app.register(atlasBroker)
      await app.register(atlasHub)
      await app.register(atlasAuth, { authenticate })
      await app.register(atlasWebSocket)
    }, '@fastify/websocket', 'atlas-websocket'],
    ['atlasHub without atlas-broker', async (app) => {
      await app.register(atlasRepository, { databasePath: join(t.testdir(), 'hub.db') })
      await app.register(atlasHub)
    }, 'atlas-broker', 'atlas-hub'],
    ['atlasHub without atlas-repository', async (app) => {
      await app.register(atlasBroker)
      await app.register(atlasHub)
    }, 'atlas-repository', 'atlas-hub'],
    ['atlasTaskRoutes without atlas-auth', async (app) => {
      await app.register(atlasRepository, { databasePath: join(t.testdir(), 'routes.db') })
      await app.register(atlasTaskRoutes)
    }, 'atlas-auth', 'atlas-task-routes']
  ]
  for (const [name, register, missing, plugin] of cases) {
    const app = bareApp(t)
    await t.rejects(async () => {
      await register(app)
      await app.ready()
    }, { code: 'FST_ERR_PLUGIN_DEPENDENCY_NOT_REGISTERED', message: `The dependency '${missing}' of plugin '${plugin}' is not registered` }, name)
  }
})

t.test('the plugins registered one by one compose into a working suite', async (t) => {
  const app = bareApp(t)
  await app.register(atlasRepository, { databasePath: join(t.testdir(), 'atlas.db') })
  await app.register(atlasBroker)
  await app.register(atlasHub)
  await app.register(atlasAuth, { authenticate })
  await app.register(fastifyWebsocket)
  await app.register(atlasWebSocket, { path: '/live' })
  await app.register(atlasTaskRoutes, { prefix: '/api' })
  const created = await app.inject({ method: 'POST', url: '/api/teams/red/tasks', payload: { title: 'composed' } })
  t.equal(created.statusCode, 201)
  t.same((await app.taskRepository.list('red')).tasks.map((task) => task.title), ['composed'])
  t.ok(app.hasRoute({ method: 'GET', url: '/live' }), 'the WebSocket route is at the configured path')
})

t.test('an integrator who registered @fastify/websocket already gets it reused, not registered twice', async (t) => {
  const app = bareApp(t)
  await app.register(fastifyWebsocket)
  await app.register(atlasRealtime, suiteOptions(t))
  await app.ready()
  t.type(app.atlasConnections, RealtimeServer)
})

t.test('the umbrella decorates the instance with the repository, broker, hub, outbox, retention and connections', async (t) => {
  const app = await readySuite(t)
  t.type(app.taskRepository, SqliteTaskRepository)
  t.type(app.atlasBroker, MemoryBroker)
  t.type(app.atlasHub, Hub)
  t.type(app.atlasOutbox, OutboxRelay)
  t.type(app.atlasRetention, RetentionPruner)
  t.type(app.atlasConnections, RealtimeServer)
  t.type(app.atlasRequirePrincipal, 'function')
  t.ok(app.hasRoute({ method: 'GET', url: '/realtime' }))
  t.ok(app.hasRoute({ method: 'PATCH', url: '/teams/:teamId/tasks/:taskId' }))

  const redis = await startRedis(t)
  const withRedis = await readySuite(t, { database: { databasePath: join(t.testdir(), 'redis.db') }, broker: { redis: redis.url } })
  t.type(withRedis.atlasBroker, RedisBroker, 'with a redis option the broker is Redis')
})

t.test('closing the app closes the database', async (t) => {
  const app = await readySuite(t)
  const repository = app.taskRepository
  await repository.create('red', { title: 'before close' }, { actor: 'alice' })
  await app.close()
  await t.rejects(repository.list('red'), { message: /database connection is not open/ })
  await t.rejects(repository.create('red', { title: 'after close' }, { actor: 'alice' }), { message: /database connection is not open/ })
})

/** Runs test/helpers/plugins-close-child.ts in its own process, with the TypeScript loader tap gave this one. */
async function runCloseChild (t: Test, redisUrl: string): Promise<{ code: number | null, signal: string | null, stdout: string, stderr: string }> {
  const loader = process.execArgv.filter((arg) => arg.includes('@tapjs/typescript'))
  const script = fileURLToPath(new URL('./helpers/plugins-close-child.ts', import.meta.url))
  const child = spawn(process.execPath, [...loader, script, t.testdir(), redisUrl], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  // Not a measurement: only a guard so a child that never exits fails this test instead of hanging it.
  const guard = setTimeout(() => { child.kill('SIGKILL') }, 45_000)
  const [code, signal] = await once(child, 'exit') as [number | null, string | null]
  clearTimeout(guard)
  return { code, signal, stdout, stderr }
}

t.test('after close, apps with the in-process and the Redis broker leave no timers or handles: the process exits by itself', async (t) => {
  const redis = await startRedis(t)
  const result = await runCloseChild(t, redis.url)
  t.same({ code: result.code, signal: result.signal }, { code: 0, signal: null }, `the child exited on its own; stderr: ${result.stderr}`)
  t.same(result.stdout.trim().split('\n').map((line) => JSON.parse(line)), [
    { broker: 'in-process', status: 201, seq: 1, closeCode: 1001 },
    { broker: 'redis', status: 201, seq: 1, closeCode: 1001 }
  ], 'each app served a mutation to a live socket, which got 1001 at close')
  t.notMatch(result.stderr, /still alive after close/)
})
