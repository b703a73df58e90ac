import fp from 'fastify-plugin'
import type { FastifyPluginAsync } from 'fastify'
import { Redis, ReplyError, type RedisOptions } from 'ioredis'
import type { Broker } from '../lib/broker.js'
import { RedisUnreachableError } from '../lib/errors.js'
import { MemoryBroker, type MemoryBus } from '../lib/memory-broker.js'
import { redactUrl } from '../lib/redact-url.js'
import { DEFAULT_CHANNEL_PREFIX, DEFAULT_CONTROL_CHANNEL, DEFAULT_STATS_CHANNEL, RedisBroker, redisAddress, safeRedisError, type RedisConnection } from '../lib/redis-broker.js'
import { Type } from '@sinclair/typebox'
import { group, integer, opaqueObject, optionError, optionsChecker, redisConnection, string, type OptionsOf } from './options.js'

export const AtlasBrokerOptionsSchema = group({
  redis: Type.Optional(redisConnection<RedisOptions>({
    expected: 'a URL string or ioredis options',
    defaultText: 'unset',
    description: 'A URL (`redis://host:port/db`) or ioredis options. Unset: an in-process broker (one process).'
  })),
  connectTimeoutMs: Type.Optional(integer({
    default: 5000,
    description: 'With `redis`: how long start-up waits, in ms, for its two connections. Meanwhile a refused or unresolved connection is retried (Redis may be starting next to this process); past it, or at once when Redis refuses the credentials (`WRONGPASS`, `NOAUTH`) or the TLS handshake fails, registration fails with an error coded `ATLAS_ERR_REDIS_UNREACHABLE` naming the address (password shown as `***`), the cause (e.g. `connect ECONNREFUSED 127.0.0.1:6379`) and what to do. Keep it below Fastify\'s `pluginTimeout` (10 s by default), which would otherwise fail start-up first with a message that names neither. Once started, Redis going away fails nothing: events are relayed when it is back.'
  })),
  channelPrefix: Type.Optional(string({ default: DEFAULT_CHANNEL_PREFIX, description: 'Team `T` publishes on channel `${channelPrefix}T`.' })),
  controlChannel: Type.Optional(string({
    default: DEFAULT_CONTROL_CHANNEL,
    description: 'The channel of signals between instances (a revocation was recorded: read it from the database). Never a team\'s channel: it must not start with `channelPrefix`. A signal carries no authority, only "read the database".'
  })),
  statsChannel: Type.Optional(string({
    default: DEFAULT_STATS_CHANNEL,
    description: 'The channel of statistics samples, about one a second from each instance running `atlasOps` (the operations page\'s figures). Neither a team\'s channel nor `controlChannel`. A sample is untrusted chart data: anyone who can publish on Redis can forge one, which misleads the charts and nothing else.'
  })),
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

const checkOptions = optionsChecker(NAME, AtlasBrokerOptionsSchema)

const brokerPlugin: FastifyPluginAsync<AtlasBrokerOptions> = async (fastify, rawOptions) => {
  const options = checkOptions(rawOptions)
  const { redis } = options
  let broker: Broker
  let connections: Redis[] = []
  if (redis === undefined) {
    broker = new MemoryBroker({ bus: options.memoryBus, instanceId: options.instanceId })
  } else {
    if (options.memoryBus !== undefined) throw optionError(NAME, 'options redis and memoryBus exclude each other')
    if (typeof redis === 'string' && !/^rediss?:\/\/[^\s]*$/.test(redis)) {
      throw optionError(NAME, `option redis must be a redis:// or rediss:// URL (got ${JSON.stringify(redactUrl(redis).slice(0, 80))})`)
    }
    if (typeof redis === 'string' && !URL.canParse(redis)) {
      // ioredis would throw Node's own TypeError, which carries the URL, password and all.
      throw optionError(NAME, `option redis is not a URL that can be parsed (got ${JSON.stringify(redactUrl(redis))}): percent-encode @, /, #, : and % in the user and password`)
    }
    // Checked before connecting: a refused option leaves no connection open.
    if (options.statsChannel.startsWith(options.channelPrefix) || options.statsChannel === options.controlChannel) {
      throw optionError(NAME, `option statsChannel (${options.statsChannel}) must be a channel of its own: not starting with channelPrefix (${options.channelPrefix}), not controlChannel`)
    }
    // The connections are this plugin's own, not @fastify/redis registrations: a namespaced
    // one decorates the instance with `redis`, and an application registering its own
    // @fastify/redis after the suite was then refused ("@fastify/redis has already been
    // registered"). @fastify/redis also waits for 'ready' without a bound, so an unreachable
    // Redis surfaced as avvio's plugin timeout, naming neither the address nor the cause.
    // Two connections, so a flood of incoming messages never delays a PUBLISH.
    // Auto-pipelining sends the PUBLISHes of one tick in one write, in order.
    const publisher = createClient(redis, { enableAutoPipelining: true }, { connectionName: 'atlas-publisher' })
    const subscriber = createClient(redis, {}, { connectionName: 'atlas-subscriber' })
    await whenReady([publisher, subscriber], redis, options.connectTimeoutMs)
    if (options.controlChannel.startsWith(options.channelPrefix)) {
      throw optionError(NAME, `option controlChannel (${options.controlChannel}) must not start with channelPrefix (${options.channelPrefix}): it would be a team's channel`)
    }
    broker = new RedisBroker({ publisher, subscriber, channelPrefix: options.channelPrefix, controlChannel: options.controlChannel, statsChannel: options.statsChannel, instanceId: options.instanceId })
    // Once started, ioredis reports each failed reconnect attempt as an 'error' event and, with
    // no listener, prints "[ioredis] Unhandled error event" to stderr every time. Log the first
    // error of an outage as a warning, the retries at debug.
    for (const [connection, client] of [['publisher', publisher], ['subscriber', subscriber]] as const) {
      let reported = false
      client
        .on('error', (error: Error) => {
          const err = safeRedisError(error)
          if (reported) fastify.log.debug({ err, connection }, 'atlas: Redis still unreachable')
          else fastify.log.warn({ err, connection }, 'atlas: Redis connection lost; events stay in the log and are relayed when it is back')
          reported = true
        })
        .on('ready', () => { reported = false })
    }
    connections = [publisher, subscriber]
  }
  fastify.decorate('atlasBroker', broker)
  fastify.addHook('onClose', async () => {
    await broker.close()
    // quit() ends a connection that is away at once (nothing queued: the broker never queues);
    // one that already ended rejects, and is done anyway.
    await Promise.all(connections.map(async (client) => { await client.quit().catch(() => { client.disconnect() }) }))
  })
}

/** A client on `connection`: `defaults` yield to the integrator's options, `own` do not. */
function createClient (connection: RedisConnection, defaults: RedisOptions, own: RedisOptions): Redis {
  if (typeof connection === 'string') return new Redis(connection, { ...defaults, ...own })
  const { url, ...options } = connection
  return url === undefined ? new Redis({ ...defaults, ...options, ...own }) : new Redis(url, { ...defaults, ...options, ...own })
}

/**
 * Waits until every client is ready, at most `timeoutMs`. Until then ioredis retries a refused
 * or unresolved connection with its backoff (in a compose file or a pod, Redis may start a
 * moment after this process). An answer that retrying cannot change fails at once: a reply
 * error during the handshake (wrong or missing password, a database index out of range) or a
 * TLS certificate refused. On failure the clients are disconnected and the error says where,
 * why and what to do.
 */
async function whenReady (clients: Redis[], connection: RedisConnection, timeoutMs: number): Promise<void> {
  let lastError: Error | undefined
  const cleanups: Array<() => void> = []
  try {
    await new Promise<void>((resolve, reject) => {
      let waiting = clients.length
      const timer = setTimeout(() => { reject(unreachable(connection, timeoutMs, lastError, false)) }, timeoutMs)
      cleanups.push(() => { clearTimeout(timer) })
      for (const client of clients) {
        const onReady = (): void => { if (--waiting === 0) resolve() }
        const onError = (err: Error): void => {
          lastError = err
          if (isFinal(err)) reject(unreachable(connection, timeoutMs, err, true))
        }
        // ioredis gave up by itself (a retryStrategy of the integrator's that returned null).
        const onEnd = (): void => { reject(unreachable(connection, timeoutMs, lastError, true)) }
        client.once('ready', onReady).on('error', onError).once('end', onEnd)
        cleanups.push(() => { client.off('ready', onReady).off('error', onError).off('end', onEnd) })
      }
    })
  } catch (err) {
    for (const client of clients) {
      // A lookup or connect still in flight may report after the disconnect: keep it off stderr.
      client.on('error', () => {})
      client.disconnect()
    }
    throw err
  } finally {
    for (const cleanup of cleanups) cleanup()
  }
}

/** Whether retrying cannot help: Redis answered with a refusal, or TLS refused its certificate. */
function isFinal (err: Error): boolean {
  if (err instanceof ReplyError) return true
  const code = (err as NodeJS.ErrnoException).code
  return typeof code === 'string' && /CERT|TLS|UNABLE_TO_VERIFY/.test(code)
}

function unreachable (connection: RedisConnection, timeoutMs: number, cause: Error | undefined, final: boolean): RedisUnreachableError {
  const address = redisAddress(connection)
  const code = (cause as NodeJS.ErrnoException | undefined)?.code
  let hint: string
  if (cause instanceof ReplyError && /^(WRONGPASS|NOAUTH)/.test(cause?.message ?? '')) {
    hint = 'Redis refused the credentials: give the right password (and user, with ACLs) in the URL, `redis://:password@host:port` or `redis://user:password@host:port`, or as ioredis options `password` and `username`'
  } else if (cause instanceof ReplyError) {
    hint = 'Redis refused a command of the connection\'s set-up: check the database number in the URL and the user\'s permissions'
  } else if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    hint = 'the host name does not resolve: correct the host in option redis'
  } else if (code === 'ECONNREFUSED') {
    hint = 'nothing accepts connections there: start Redis, or correct the host and port in option redis'
  } else if (cause !== undefined && final && isFinal(cause)) {
    hint = 'the TLS handshake failed: check the certificate options (ioredis `tls`), or use redis:// for a Redis without TLS'
  } else if (cause === undefined) {
    hint = 'no answer: check the host, the port and any firewall between this process and Redis'
  } else {
    hint = 'check that Redis runs there and that option redis points at it'
  }
  const waited = final ? '' : `; start-up waited ${timeoutMs} ms for it (option connectTimeoutMs)`
  const because = cause === undefined ? `no answer within ${timeoutMs} ms` : cause.message
  return new RedisUnreachableError(NAME, `cannot connect to Redis at ${address} (${because}): ${hint}${waited}`, address, cause === undefined ? undefined : safeRedisError(cause))
}

export const atlasBroker = fp(brokerPlugin, { fastify: '5.x', name: NAME })
export default atlasBroker
