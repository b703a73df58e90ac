import fastifyRateLimit from '@fastify/rate-limit'
import type { FastifyInstance } from 'fastify'
import { Redis, type RedisOptions } from 'ioredis'
import { Type } from '@sinclair/typebox'
import { safeRedisError } from '../lib/redis-broker.js'
import { redisConnection } from './options.js'
import { WriteBehindCounters, writeBehindStore } from './write-behind-store.js'

/** Where rate-limit counters live so a limit holds across instances: a Redis URL or ioredis options. */
export type RateLimitRedis = string | RedisOptions

/**
 * How long one counter update may take before the request goes through uncounted. Counting is
 * an INCR on a nearby Redis (well under a millisecond); a Redis that stopped answering without
 * closing its connection must not hold mutations up.
 */
const COMMAND_TIMEOUT_MS = 250

/** Longest start-up wait for the counters' connection (a Redis host that drops packets). */
const FIRST_CONNECT_WAIT_MS = 2000

/** The `rateLimitRedis` option of the plugins that count requests. */
export function rateLimitRedisOption (description: string) {
  return Type.Optional(redisConnection<RedisOptions>({ expected: 'a Redis URL or ioredis options', defaultText: 'unset (the umbrella: `broker.redis`)', description }))
}

/**
 * Registers @fastify/rate-limit in `scope`, which must be an encapsulated context of the
 * suite's own: its decorators (`rateLimit`, `createRateLimit`) then never shadow an
 * integrator's registration, and `global: false` keeps it off every route that does not ask.
 *
 * With `redis`, counters go to @fastify/rate-limit's Redis store on a connection of their own
 * that never queues a command while Redis is away (`enableOfflineQueue: false`): a counter
 * update fails at once and `skipOnError` lets the request through uncounted. Redis being down
 * therefore never fails or delays a mutation; the limit is simply not enforced until it is back.
 */
export async function registerRateLimit (
  scope: FastifyInstance,
  plugin: string,
  redis: RateLimitRedis | undefined,
  nameSpace: string,
  { writeBehindMs }: { writeBehindMs?: number } = {}
): Promise<void> {
  let connection: Redis | undefined
  if (redis !== undefined) {
    const options: RedisOptions = { enableOfflineQueue: false, commandTimeout: COMMAND_TIMEOUT_MS, connectionName: `atlas-rate-limit-${plugin}` }
    connection = typeof redis === 'string' ? new Redis(redis, options) : new Redis({ ...redis, ...options })
    let reported = false
    const client = connection
    client
      .on('error', (error: Error) => {
        const err = safeRedisError(error)
        if (reported) scope.log.debug({ err, plugin }, 'atlas: rate-limit Redis still unreachable')
        else if (writeBehindMs !== undefined) scope.log.warn({ err, plugin }, 'atlas: rate-limit Redis unreachable; each instance limits what it counted itself until it is back')
        else scope.log.warn({ err, plugin }, 'atlas: rate-limit Redis unreachable; requests go through uncounted until it is back')
        reported = true
      })
      .on('ready', () => { reported = false })
    // No QUIT: it would wait for a Redis that may be gone, and counters need no goodbye.
    scope.addHook('onClose', async () => { client.disconnect() })
    // Counted from the first request when Redis is there; an unreachable one fails its first
    // attempt at once (or the bound passes) and start-up goes on, the limit waiting for it.
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, FIRST_CONNECT_WAIT_MS)
      client.once('ready', done).once('error', done)
      function done (): void {
        clearTimeout(timer)
        client.off('ready', done).off('error', done)
        resolve()
      }
    })
  }
  if (connection !== undefined && writeBehindMs !== undefined) {
    const counters = new WriteBehindCounters(connection, nameSpace, writeBehindMs, (err) => { scope.log.debug({ err, plugin }, 'atlas: sending rate-limit counts to Redis failed') })
    scope.addHook('preClose', async () => { counters.close() })
    await scope.register(fastifyRateLimit, { global: false, store: writeBehindStore(counters) })
    return
  }
  await scope.register(fastifyRateLimit, { global: false, skipOnError: true, redis: connection, nameSpace, cache: 10_000 })
}

/** `Retry-After` and the x-ratelimit-* headers of a refusal, as @fastify/rate-limit sends them. */
export function rateLimitHeaders (max: number, retryAfterSeconds: number): Record<string, string> {
  const seconds = String(retryAfterSeconds)
  return { 'x-ratelimit-limit': String(max), 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': seconds, 'retry-after': seconds }
}
