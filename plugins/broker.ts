import fp from 'fastify-plugin'
import fastifyRedis from '@fastify/redis'
import type { FastifyPluginAsync } from 'fastify'
import type { RedisOptions } from 'ioredis'
import type { Broker } from '../lib/broker.js'
import { MemoryBroker, type MemoryBus } from '../lib/memory-broker.js'
import { DEFAULT_CHANNEL_PREFIX, RedisBroker } from '../lib/redis-broker.js'
import { Type } from '@sinclair/typebox'
import { group, opaqueObject, optionError, optionsChecker, redisConnection, string, type OptionsOf } from './options.js'

export const AtlasBrokerOptionsSchema = group({
  redis: Type.Optional(redisConnection<RedisOptions>({
    expected: 'a URL string or ioredis options',
    defaultText: 'unset',
    description: 'A URL (`redis://host:port/db`) or ioredis options. Unset: an in-process broker (one process).'
  })),
  channelPrefix: Type.Optional(string({ default: DEFAULT_CHANNEL_PREFIX, description: 'Team `T` publishes on channel `${channelPrefix}T`.' })),
  memoryBus: Type.Optional(opaqueObject<MemoryBus>({
    defaultText: 'a private bus',
    description: 'In-process only: brokers on the same `MemoryBus` reach each other (several instances in one process, as in tests). Excludes `redis`.'
  })),
  instanceId: Type.Optional(string({ pattern: /^\S+$/, defaultText: 'a random UUID', description: 'This instance\'s id in broker messages (no whitespace).' }))
}, { $id: 'AtlasBrokerOptions', description: 'Options of atlasBroker.' })

export type AtlasBrokerOptions = OptionsOf<typeof AtlasBrokerOptionsSchema>

declare module 'fastify' {
  interface FastifyInstance {
    /** Carries committed events to the other instances. */
    atlasBroker: Broker
  }
}

const NAME = 'atlas-broker'
export const PUBLISHER_NAMESPACE = 'atlasPublisher'
export const SUBSCRIBER_NAMESPACE = 'atlasSubscriber'

const checkOptions = optionsChecker(NAME, AtlasBrokerOptionsSchema)

const brokerPlugin: FastifyPluginAsync<AtlasBrokerOptions> = async (fastify, rawOptions) => {
  const options = checkOptions(rawOptions)
  const { redis } = options
  let broker: Broker
  if (redis === undefined) {
    broker = new MemoryBroker({ bus: options.memoryBus, instanceId: options.instanceId })
  } else {
    if (options.memoryBus !== undefined) throw optionError(NAME, 'options redis and memoryBus exclude each other')
    if (typeof redis === 'string' && !/^rediss?:\/\/[^\s]*$/.test(redis)) {
      throw optionError(NAME, `option redis must be a redis:// or rediss:// URL (got ${JSON.stringify(redis.slice(0, 80))})`)
    }
    const connection = typeof redis === 'string' ? { url: redis } : redis
    // Two connections, so a flood of incoming messages never delays a PUBLISH.
    // Auto-pipelining sends the PUBLISHes of one tick in one write, in order.
    await fastify.register(fastifyRedis, { enableAutoPipelining: true, ...connection, namespace: PUBLISHER_NAMESPACE, connectionName: 'atlas-publisher' })
    await fastify.register(fastifyRedis, { ...connection, namespace: SUBSCRIBER_NAMESPACE, connectionName: 'atlas-subscriber' })
    broker = new RedisBroker({
      publisher: fastify.redis[PUBLISHER_NAMESPACE],
      subscriber: fastify.redis[SUBSCRIBER_NAMESPACE],
      channelPrefix: options.channelPrefix,
      instanceId: options.instanceId
    })
    // Once started, ioredis reports each failed reconnect attempt as an 'error' event and, with
    // no listener, prints "[ioredis] Unhandled error event" to stderr every time. Log the first
    // error of an outage as a warning, the retries at debug.
    for (const namespace of [PUBLISHER_NAMESPACE, SUBSCRIBER_NAMESPACE]) {
      let reported = false
      fastify.redis[namespace]
        .on('error', (err: Error) => {
          if (reported) fastify.log.debug({ err, connection: namespace }, 'atlas: Redis still unreachable')
          else fastify.log.warn({ err, connection: namespace }, 'atlas: Redis connection lost; events stay in the log and are relayed when it is back')
          reported = true
        })
        .on('ready', () => { reported = false })
    }
  }
  fastify.decorate('atlasBroker', broker)
  fastify.addHook('onClose', async () => { await broker.close() })
}

export const atlasBroker = fp(brokerPlugin, { fastify: '5.x', name: NAME })
export default atlasBroker
