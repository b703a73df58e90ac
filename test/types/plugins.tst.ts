import Fastify, { type FastifyReply, type FastifyRequest } from 'fastify'
import { describe, expect, test } from 'tstyche'
import {
  atlasAuth,
  atlasBroker,
  atlasHub,
  atlasRealtime,
  atlasRepository,
  atlasTaskRoutes,
  atlasWebSocket,
  Hub,
  RealtimeServer,
  TaskRepository,
  type AtlasRealtimeOptions,
  type Authenticate,
  type Broker,
  type Principal
} from '../../plugins/index.js'

// The plugins' options and the decorators, as a TypeScript user of the package sees them: every
// option documented in the README type-checks, an unknown option or a wrong type does not.

const app = Fastify()
const authenticate: Authenticate = () => ({ userId: 'u1', teams: ['team-1'] })

describe('atlasRealtime', () => {
  test('takes the documented options', () => {
    expect(app.register).type.toBeCallableWith(atlasRealtime, { authenticate, database: { databasePath: './atlas.db' } })
    expect(app.register).type.toBeCallableWith(atlasRealtime, { authenticate, database: { url: 'postgres://atlas@db/atlas' } })
    expect(app.register).type.not.toBeCallableWith(atlasRealtime, { authenticate, database: {} })
    expect(app.register).type.toBeCallableWith(atlasRealtime, {
      authenticate,
      database: { databasePath: ':memory:', busyTimeoutMs: 5000, checkpointIntervalMs: 0 },
      broker: { redis: 'redis://127.0.0.1:6379', channelPrefix: 'atlas:' },
      hub: { maxReplayEvents: 1000 },
      websocket: { path: '/realtime', heartbeatMs: 30_000, maxPayload: 65_536, allowedOrigins: ['https://atlas.example'] },
      routes: { prefix: '/api', pageSize: 50 },
      auth: { maxFailedAuthPerIp: 20 }
    })
    expect(app.register).type.toBeCallableWith(atlasRealtime, { authenticate, database: { databasePath: ':memory:' }, routes: false })
  })

  test('refuses an unknown option, a wrong type or a missing required one', () => {
    expect(app.register).type.not.toBeCallableWith(atlasRealtime, { authenticate, database: { databasePath: ':memory:' }, unknownOption: true })
    expect(app.register).type.not.toBeCallableWith(atlasRealtime, { authenticate, database: { databasePath: ':memory:', unknownOption: true } })
    expect(app.register).type.not.toBeCallableWith(atlasRealtime, { authenticate, database: { databasePath: 42 } })
    expect(app.register).type.not.toBeCallableWith(atlasRealtime, { authenticate, database: { databasePath: ':memory:' }, websocket: { heartbeatMs: '30s' } })
    expect(app.register).type.not.toBeCallableWith(atlasRealtime, { authenticate, database: { databasePath: ':memory:' }, routes: true })
    expect(app.register).type.not.toBeCallableWith(atlasRealtime, { database: { databasePath: ':memory:' } })
    expect(app.register).type.not.toBeCallableWith(atlasRealtime, { authenticate })
  })

  test('its options type is exported', () => {
    expect<AtlasRealtimeOptions>().type.toBeAssignableFrom({ authenticate, database: { databasePath: ':memory:' } })
    expect<AtlasRealtimeOptions['authenticate']>().type.toBe<Authenticate>()
  })
})

describe('each plugin on its own', () => {
  test('atlasRepository', () => {
    expect(app.register).type.toBeCallableWith(atlasRepository, { databasePath: ':memory:', busyTimeoutMs: 100, migrationsFolder: './drizzle', checkpointIntervalMs: 1000 })
    expect(app.register).type.not.toBeCallableWith(atlasRepository, { databasePath: ':memory:', unknownOption: 1 })
    expect(app.register).type.not.toBeCallableWith(atlasRepository, { databasePath: ':memory:', busyTimeoutMs: '100' })
    expect(app.register).type.not.toBeCallableWith(atlasRepository, {})
    expect(app.register).type.toBeCallableWith(atlasRepository, { url: 'postgres://atlas@db/atlas', poolSize: 20, driver: 'pg' })
    expect(app.register).type.not.toBeCallableWith(atlasRepository, { url: 'postgres://atlas@db/atlas', databasePath: './atlas.db' })
  })

  test('atlasBroker', () => {
    expect(app.register).type.toBeCallableWith(atlasBroker, {})
    expect(app.register).type.toBeCallableWith(atlasBroker, { redis: 'redis://127.0.0.1:6379', channelPrefix: 'atlas:', instanceId: 'a' })
    expect(app.register).type.toBeCallableWith(atlasBroker, { redis: { host: '127.0.0.1', port: 6379 } })
    expect(app.register).type.not.toBeCallableWith(atlasBroker, { unknownOption: 1 })
    expect(app.register).type.not.toBeCallableWith(atlasBroker, { channelPrefix: 1 })
  })

  test('atlasHub', () => {
    expect(app.register).type.toBeCallableWith(atlasHub, {})
    expect(app.register).type.toBeCallableWith(atlasHub, { maxReplayEvents: 1000 })
    expect(app.register).type.not.toBeCallableWith(atlasHub, { unknownOption: 1 })
    expect(app.register).type.not.toBeCallableWith(atlasHub, { maxReplayEvents: '1000' })
  })

  test('atlasAuth', () => {
    expect(app.register).type.toBeCallableWith(atlasAuth, { authenticate })
    expect(app.register).type.toBeCallableWith(atlasAuth, { authenticate: async () => null, maxFailedAuthPerIp: 20, failedAuthWindowMs: 60_000 })
    expect(app.register).type.not.toBeCallableWith(atlasAuth, {})
    expect(app.register).type.not.toBeCallableWith(atlasAuth, { authenticate, unknownOption: 1 })
    expect(app.register).type.not.toBeCallableWith(atlasAuth, { authenticate: () => 'u1' })
  })

  test('atlasWebSocket', () => {
    expect(app.register).type.toBeCallableWith(atlasWebSocket, {})
    expect(app.register).type.toBeCallableWith(atlasWebSocket, { path: '/realtime', maxBufferedBytes: 1 << 20, heartbeatMs: 30_000, maxConnections: 10_000, allowedOrigins: ['https://atlas.example'] })
    expect(app.register).type.not.toBeCallableWith(atlasWebSocket, { unknownOption: 1 })
    expect(app.register).type.not.toBeCallableWith(atlasWebSocket, { heartbeatMs: '30s' })
    expect(app.register).type.not.toBeCallableWith(atlasWebSocket, { allowedOrigins: 'https://atlas.example' })
  })

  test('atlasTaskRoutes', () => {
    expect(app.register).type.toBeCallableWith(atlasTaskRoutes, {})
    expect(app.register).type.toBeCallableWith(atlasTaskRoutes, { prefix: '/api', bodyLimit: 65_536, pageSize: 50, maxPageSize: 200, maxMutationsPerUser: 600, mutationWindowMs: 60_000 })
    expect(app.register).type.not.toBeCallableWith(atlasTaskRoutes, { unknownOption: 1 })
    expect(app.register).type.not.toBeCallableWith(atlasTaskRoutes, { pageSize: '50' })
  })
})

describe('the decorators', () => {
  test('on the instance', () => {
    expect(app.taskRepository).type.toBe<TaskRepository>()
    expect(app.atlasHub).type.toBe<Hub>()
    expect(app.atlasConnections).type.toBe<RealtimeServer>()
    expect(app.atlasBroker).type.toBe<Broker>()
    expect(app.atlasRequirePrincipal).type.toBe<(request: FastifyRequest, reply: FastifyReply) => Promise<Principal | null>>()
  })

  test('on the request', () => {
    app.get('/', async (request) => {
      expect(request.atlasPrincipal).type.toBe<Principal | null>()
      return null
    })
  })
})
