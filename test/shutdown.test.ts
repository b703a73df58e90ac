/**
 * Graceful shutdown: clients are told 1001 (going away: reconnect elsewhere and resume),
 * upgrades are refused from then on, and a publish still in flight when the instance closes
 * finishes: the event reaches the other instance and is recorded as published, so it is not
 * relayed again.
 */
import t from 'tap'
import Database from 'better-sqlite3'
import { Redis } from 'ioredis'
import { api, connectClient, startInstance, tokenFor } from './helpers/app.js'
import { startRedis } from './helpers/redis.js'
import { pingPong, seqsOf, TestClient } from './helpers/ws-client.js'

async function upgradeOutcome (wsUrl: string, token: string): Promise<string> {
  const client = new TestClient(`${wsUrl}?access_token=${token}`)
  try {
    await client.opened()
    await client.close()
    return 'opened'
  } catch (err) {
    const { statusCode, code } = err as { statusCode?: number, code?: string }
    return statusCode !== undefined ? `refused ${statusCode}` : `refused ${code ?? (err as Error).message}`
  }
}

t.test('close: 1001 to clients, upgrades refused, a publish in flight finishes and is recorded', async (t) => {
  const redis = await startRedis(t)
  const databasePath = `${t.testdir()}/atlas.db`
  const closing = await startInstance(t, { databasePath, redisUrl: redis.url })
  const staying = await startInstance(t, { databasePath, redisUrl: redis.url })
  const alice = await tokenFor('alice', ['red'])
  const onClosing = await connectClient(t, closing, alice)
  const onStaying = await connectClient(t, staying, alice)

  // Redis holds every PUBLISH until unpaused: the publish of the next event is in flight when
  // the instance starts closing.
  const control = new Redis(redis.url, { lazyConnect: true })
  await control.connect()
  t.teardown(() => { control.disconnect() })
  await control.call('CLIENT', 'PAUSE', '20000', 'WRITE')
  const created = await api(closing.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 'just before close' } })
  t.equal(created.status, 201, 'the mutation does not wait for Redis')
  await onClosing.waitFor('the local event', () => onClosing.events.length === 1)

  // Observe the moment the outbox starts closing, to let Redis answer only while it waits.
  const outbox = closing.app.atlasOutbox
  const outboxClose = outbox.close.bind(outbox)
  let hubClosing!: () => void
  const hubClosingStarted = new Promise<void>((resolve) => { hubClosing = resolve })
  outbox.close = async (timeoutMs: number) => { hubClosing(); await outboxClose(timeoutMs) }

  const closed = closing.close()
  const { code, reason } = await onClosing.closed
  t.equal(code, 1001, 'clients are told the server is going away')
  t.equal(reason, 'server shutting down')
  await hubClosingStarted
  t.match(await upgradeOutcome(closing.wsUrl, alice), /^refused/, 'an upgrade while the instance closes is refused')
  await pingPong(onStaying)
  t.same(onStaying.events, [], 'the event has not gone through Redis yet')
  await control.call('CLIENT', 'UNPAUSE')
  await closed

  await onStaying.waitFor('the event published while closing', () => onStaying.events.length === 1)
  t.same(seqsOf(onStaying.events, 'red'), [1])
  t.equal((onStaying.events[0] as { task?: { title: string } }).task?.title, 'just before close')
  const db = new Database(databasePath, { readonly: true })
  t.teardown(() => { db.close() })
  t.same(db.prepare('select seq, published from events').all(), [{ seq: 1, published: 1 }], 'recorded as published: it will not be relayed again')

  t.match(await upgradeOutcome(closing.wsUrl, alice), /^refused/, 'an upgrade after close is refused')
  const after = await api(closing.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 'too late' } }).then((r) => r.status, () => 'refused')
  t.equal(after, 'refused', 'so is a mutation')

  // The other instance is unaffected.
  t.equal((await api(staying.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 'still here' } })).status, 201)
  await onStaying.waitFor('seq 2', () => onStaying.events.length === 2)
  t.same(seqsOf(onStaying.events, 'red'), [1, 2])
})

t.test('close while Redis is down completes, after a client subscribed during the outage', async (t) => {
  const redis = await startRedis(t)
  const databasePath = `${t.testdir()}/atlas.db`
  const instance = await startInstance(t, { databasePath, redisUrl: redis.url })
  const alice = await tokenFor('alice', ['red'])
  await redis.kill()
  const client = await connectClient(t, instance, alice)
  t.equal((await api(instance.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 'while down' } })).status, 201)
  await client.waitFor('the local event', () => client.events.length === 1)
  await t.resolves(instance.close(), 'app.close() resolves although Redis is unreachable')
  t.equal((await client.closed).code, 1001)
})
