import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import { join } from 'node:path'
import { atlasBroker, atlasRealtime, atlasRepository, type AtlasRealtimeOptions } from '../plugins/index.js'
import { group, integer, optionsChecker } from '../plugins/options.js'
import { Type } from '@sinclair/typebox'

const authenticate = async (): Promise<{ userId: string, teams: string[] }> => ({ userId: 'alice', teams: ['red'] })

function bareApp (t: Test): FastifyInstance {
  const app = Fastify()
  t.teardown(async () => { await app.close() })
  return app
}

t.test('options the schemas do not know are refused, naming the option and the plugin', async (t) => {
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ['a misspelt broker option', { broker: { redisUrl: 'redis://127.0.0.1:6379' } }, /^atlas-broker: option redisUrl is unknown \(the options are redis, connectTimeoutMs, channelPrefix, controlChannel, statsChannel, memoryBus, instanceId\)$/],
    ['an unknown umbrella option', { websockets: {} }, /^atlas-realtime: option websockets is unknown/],
    ['an unknown retention option', { hub: { retention: { maxEvents: 5 } } }, /^atlas-hub: option retention.maxEvents is unknown/],
    ['an unknown websocket option', { websocket: { heartbeat: 5 } }, /^atlas-websocket: option heartbeat is unknown/],
    ['a malformed maxPayload', { websocket: { maxPayload: 0 } }, /^atlas-realtime: option websocket.maxPayload must be a positive integer \(got 0\)$/],
    ['routes neither an object nor false', { routes: true }, /^atlas-realtime: option routes must be an object or false \(got true\)$/],
    ['an origin that is not a string', { websocket: { allowedOrigins: [42] } }, /^atlas-websocket: option allowedOrigins must be an array of origins \(got \[42\]\)$/],
    // Node turns a timer of 2^31 ms or more into 1 ms: such a heartbeat would drop every socket.
    ['a heartbeat beyond what a timer takes', { websocket: { heartbeatMs: 2 ** 40 } }, /^atlas-websocket: option heartbeatMs must be at most 2147483647 \(got 1099511627776\)$/],
    ['a relay interval beyond what a timer takes', { hub: { relayIntervalMs: 2 ** 31 } }, /^atlas-hub: option relayIntervalMs must be at most 2147483647/],
    ['a Redis URL that is not one', { broker: { redis: 'not a url' } }, /^atlas-broker: option redis must be a redis:\/\/ or rediss:\/\/ URL \(got "not a url"\)$/],
    ['authenticate inside auth, where the top level\'s would silently win', { auth: { authenticate } }, /^atlas-realtime: option auth.authenticate is not an option: give authenticate at the top level$/]
  ]
  for (const [name, overrides, message] of cases) {
    const app = bareApp(t)
    await t.rejects(async () => {
      await app.register(atlasRealtime, { authenticate, database: { databasePath: join(t.testdir(), 'atlas.db') }, ...overrides } as AtlasRealtimeOptions)
      await app.ready()
    }, { name: 'TypeError', code: 'ATLAS_ERR_OPTION', message }, name)
  }
})

t.test('option errors carry a code and are TypeErrors, for each plugin registered alone', async (t) => {
  const app = bareApp(t)
  const error = await app.register(atlasRepository, { databasePath: ':memory:', busyTimeoutMs: 'long' } as never).ready().then(() => undefined, (err: unknown) => err)
  t.ok(error instanceof TypeError)
  t.match(error, { code: 'ATLAS_ERR_OPTION', message: 'atlas-repository: option busyTimeoutMs must be a non-negative integer (got "long")' })
  const broker = bareApp(t)
  await t.rejects(async () => { await broker.register(atlasBroker, { instanceId: 'has space' }); await broker.ready() }, { code: 'ATLAS_ERR_OPTION', message: /^atlas-broker: option instanceId must be a non-empty string matching \/\^\\S\+\$\/ \(got "has space"\)$/ })
})

t.test('defaults come from the schema, nested groups included, and the given object is not changed', async (t) => {
  const schema = group({
    a: Type.Optional(integer({ default: 3, description: 'a' })),
    b: Type.Optional(integer({ description: 'b' })),
    nested: Type.Optional(group({ c: Type.Optional(integer({ allowZero: true, default: 0, description: 'c' })) }, { default: {}, description: 'n' }))
  })
  const check = optionsChecker('test-plugin', schema)
  const given = { nested: {} }
  t.same(check(given), { a: 3, nested: { c: 0 } })
  t.same(given, { nested: {} }, 'the integrator\'s object is untouched')
  t.same(check({ a: 5, b: 1 }), { a: 5, b: 1, nested: { c: 0 } })
  t.throws(() => check(null), { code: 'ATLAS_ERR_OPTION', message: 'test-plugin: options must be an object (got null)' })
})
