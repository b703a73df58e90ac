/**
 * Issue #10: an instance exited with code 1 on SIGTERM about 0.1 s after Redis came back, with
 * an unhandled "Connection is closed." from ioredis. The path: the subscriber reconnects and is
 * mid-handshake when the app closes; quit() then ends the socket at once, the ready check's
 * reply still arrives, ioredis turns 'ready' and re-subscribes on its own (autoResubscribe) with
 * a SUBSCRIBE nobody awaits; the socket closes and that SUBSCRIBE is rejected, unobserved. A
 * proxy holds the ready check's reply so the shutdown lands in that window every time.
 */
import t from 'tap'
import type { Redis } from 'ioredis'
import type { RedisBroker } from '../lib/redis-broker.js'
import { connectClient, startInstance, tokenFor } from './helpers/app.js'
import { startRedis } from './helpers/redis.js'
import { startTcpProxy } from './helpers/tcp-proxy.js'

t.test('closing while the subscriber is mid-handshake after Redis came back leaves no unhandled rejection', async (t) => {
  const redis = await startRedis(t)
  const proxy = await startTcpProxy(t, redis.port)
  const instance = await startInstance(t, { databasePath: `${t.testdir()}/atlas.db`, redisUrl: proxy.url })
  const subscriber: Redis = (instance.app.atlasBroker as RedisBroker).subscriber
  // A subscribed team: the subscriber has a channel to re-subscribe after the reconnect.
  await connectClient(t, instance, await tokenFor('alice', ['red']), { teams: ['red'] })

  const unhandled: unknown[] = []
  const onUnhandled = (reason: unknown): void => { unhandled.push(reason) }
  process.on('unhandledRejection', onUnhandled)
  t.teardown(() => { process.off('unhandledRejection', onUnhandled) })

  const reconnecting = new Promise((resolve) => subscriber.once('reconnecting', resolve))
  await redis.kill()
  await reconnecting
  // The subscriber's connection (named by CLIENT SETNAME in the handshake) sent its ready
  // check, INFO: its answer is held until the client ends its side.
  const inFlight = proxy.holdReplies((sent) => sent.includes('atlas-subscriber') && /\r\ninfo\r\n/i.test(sent))
  await redis.restart()
  await inFlight
  t.equal(subscriber.status, 'connect', 'the subscriber is mid-handshake')

  const ended = new Promise((resolve) => subscriber.once('end', resolve))
  await instance.close()
  await ended
  // Node reports an unhandled rejection once the ticks and microtasks after it have run.
  await new Promise((resolve) => setImmediate(resolve))
  t.same(unhandled.map((reason) => (reason as Error).message), [], 'no unhandled rejection')
})
