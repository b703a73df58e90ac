/**
 * Start-up against Redis: an unreachable, unresolvable or password-protected Redis fails
 * registration within a bound we choose, with an error that names the address (password
 * hidden), the cause and what to do; and an application's own un-namespaced @fastify/redis
 * works whether it is registered before or after the suite.
 */
import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import fastifyRedis from '@fastify/redis'
import { Redis } from 'ioredis'
import { join } from 'node:path'
import { atlasBroker, atlasRealtime, type AtlasRealtimeOptions } from '../plugins/index.js'
import { freePort } from './helpers/net.js'
import { startRedis } from './helpers/redis.js'

/** avvio's default plugin timeout: the error used to come only when it ran out. */
const AVVIO_PLUGIN_TIMEOUT_MS = 10_000

const principal = { userId: 'alice', teams: ['red'] }

function bareApp (t: Test): FastifyInstance {
  const app = Fastify()
  // After a failed start-up close() may reject as well; the test is about the start-up.
  t.teardown(async () => { await app.close().catch(() => {}) })
  return app
}

function suiteOptions (t: Test, broker: Record<string, unknown>): AtlasRealtimeOptions {
  return { authenticate: async () => principal, database: { databasePath: join(t.testdir(), 'atlas.db') }, broker } as AtlasRealtimeOptions
}

/**
 * Runs `register` (which registers the plugin on `app`) and starts `app`; returns the start-up
 * error and how long it took to come (awaiting register() already loads the plugin, so it may
 * come from there).
 */
async function startupFailure (app: FastifyInstance, register: () => Promise<unknown>): Promise<{ error: any, elapsed: number }> {
  const started = Date.now()
  try {
    await register()
    await app.ready()
  } catch (error) {
    return { error, elapsed: Date.now() - started }
  }
  throw new Error('start-up succeeded')
}

t.test('an unreachable Redis fails start-up within connectTimeoutMs, naming the address (password hidden) and the cause', async (t) => {
  const port = await freePort()
  const app = bareApp(t)
  // The default bound (5 s) through the umbrella, as an integrator meets it.
  const { error, elapsed } = await startupFailure(app, async () => await app.register(atlasRealtime, suiteOptions(t, { redis: `redis://:hunter2@127.0.0.1:${port}/0` })))
  t.equal(error.code, 'ATLAS_ERR_REDIS_UNREACHABLE', error.message)
  t.equal(error.name, 'RedisUnreachableError')
  t.match(error.message, `atlas-broker: cannot connect to Redis at redis://:***@127.0.0.1:${port}/0 (connect ECONNREFUSED 127.0.0.1:${port})`)
  t.match(error.message, /start Redis, or correct the host and port/)
  t.match(error.message, /waited 5000 ms for it \(option connectTimeoutMs\)/)
  t.notMatch(error.message, 'hunter2')
  t.notMatch(JSON.stringify(error), 'hunter2')
  t.equal(error.cause?.code, 'ECONNREFUSED')
  t.ok(elapsed < AVVIO_PLUGIN_TIMEOUT_MS, `failed after ${elapsed} ms, before avvio's plugin timeout`)
})

t.test('a host name that does not resolve fails within the bound, saying so', async (t) => {
  const app = bareApp(t)
  const { error, elapsed } = await startupFailure(app, async () => await app.register(atlasBroker, { redis: 'redis://user:s3cret@no-such-host.invalid:6379', connectTimeoutMs: 1000 }))
  t.equal(error.code, 'ATLAS_ERR_REDIS_UNREACHABLE', error.message)
  t.match(error.message, /^atlas-broker: cannot connect to Redis at redis:\/\/user:\*\*\*@no-such-host\.invalid:6379 \(getaddrinfo (ENOTFOUND|EAI_AGAIN) no-such-host\.invalid\): the host name does not resolve/)
  t.notMatch(error.message, 's3cret')
  t.ok(elapsed < AVVIO_PLUGIN_TIMEOUT_MS, `failed after ${elapsed} ms`)
})

t.test('a wrong or missing password fails at once, without waiting for the bound', async (t) => {
  const redis = await startRedis(t)
  const admin = new Redis(redis.url)
  await admin.config('SET', 'requirepass', 'right-one')
  await admin.quit()
  // A bound far above what a refusal takes: retrying cannot help, so it is not waited for.
  const connectTimeoutMs = 8000
  for (const [name, url, reply] of [
    ['wrong password', `redis://:wrong-one@127.0.0.1:${redis.port}`, 'WRONGPASS'],
    ['no password', redis.url, 'NOAUTH']
  ] as const) {
    const app = bareApp(t)
    const { error, elapsed } = await startupFailure(app, async () => await app.register(atlasBroker, { redis: url, connectTimeoutMs }))
    t.equal(error.code, 'ATLAS_ERR_REDIS_UNREACHABLE', `${name}: ${String(error.message)}`)
    t.match(error.message, `cannot connect to Redis at redis://${name === 'no password' ? '' : ':***@'}127.0.0.1:${redis.port} (${reply}`, name)
    t.match(error.message, /Redis refused the credentials: give the right password/, name)
    t.notMatch(error.message, 'wrong-one', name)
    t.notMatch(JSON.stringify({ ...error, cause: { ...error.cause } }), 'wrong-one', `${name}: not in the error's properties either`)
    t.ok(elapsed < connectTimeoutMs / 2, `${name}: failed after ${elapsed} ms`)
  }
  // ioredis options (not a URL): the message shows the address without the password.
  const app = bareApp(t)
  const { error } = await startupFailure(app, async () => await app.register(atlasBroker, { redis: { host: '127.0.0.1', port: redis.port, password: 'wrong-one' }, connectTimeoutMs }))
  t.match(error.message, `cannot connect to Redis at redis://127.0.0.1:${redis.port} (WRONGPASS`)
  t.notMatch(error.message, 'wrong-one')
})

t.test("an application's own @fastify/redis works registered before or after the suite", async (t) => {
  const redis = await startRedis(t)
  for (const order of ['before', 'after'] as const) {
    t.test(order, async (t) => {
      const app = bareApp(t)
      if (order === 'before') await app.register(fastifyRedis, { url: redis.url })
      await app.register(atlasRealtime, suiteOptions(t, { redis: redis.url }))
      if (order === 'after') await app.register(fastifyRedis, { url: redis.url })
      await app.ready()
      t.equal(await app.redis.ping(), 'PONG', "the application's client is fastify.redis")
      t.equal((app.redis as unknown as Record<string, unknown>).atlasPublisher, undefined, 'the suite adds nothing to it')
      const clients = await app.redis.client('LIST') as string
      t.match(clients, /name=atlas-publisher/, "the suite's publisher is connected")
      t.match(clients, /name=atlas-subscriber/, "the suite's subscriber is connected")
    })
  }
})
