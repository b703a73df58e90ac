/**
 * Retention of the event log: the hub prunes on its interval, a resume from before the retained
 * history is told to resync, the outbox (unpublished events) and everything after it are never
 * pruned, a stream that falls behind pruned history tells its clients instead of skipping, and
 * mutation ids are remembered for their TTL only. Each on SQLite and on PostgreSQL.
 */
import t from 'tap'
import { kBeforePublish } from '../lib/outbox-relay.js'
import type { TaskRepository } from '../lib/repository.js'
import type { LoggedEvent } from '../lib/types.js'
import { MemoryBus } from '../lib/memory-broker.js'
import { api, connectClient, seqRange, startInstance, tokenFor, waitUntil } from './helpers/app.js'
import { eachBackend, openTestRepository, testDatabase } from './helpers/backends.js'
import { pingPong, seqsOf } from './helpers/ws-client.js'

/** The seqs a team's log still holds. */
async function eventSeqs (repository: TaskRepository, team: string): Promise<number[]> {
  return (await repository.eventsAfter(team, 0, 10_000)).map((event) => event.seq)
}

eachBackend(t, 'the hub prunes on its interval; resumes before the retained history resync, after it replay', async (t, backend) => {
  const instance = await startInstance(t, { ...await testDatabase(t, backend), realtime: { hub: { retention: { maxEventsPerTeam: 5, pruneIntervalMs: 50 } } } })
  const alice = await tokenFor('alice', ['red'])
  for (let i = 1; i <= 20; i++) {
    t.equal((await api(instance.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: `t${i}` } })).status, 201)
  }
  await waitUntil('the log pruned to the last 5 events', async () => (await instance.app.taskRepository.history('red')).prunedThrough === 15)
  t.same(await eventSeqs(instance.app.taskRepository, 'red'), seqRange(16, 20))
  t.equal(await instance.app.taskRepository.headSeq('red'), 20, 'pruning never moves the head back')

  const stale = await connectClient(t, instance, alice, { since: { red: 10 } })
  await pingPong(stale)
  t.same(stale.frames.find((f) => f.type === 'resync'), { type: 'resync', teamId: 'red', seq: 20, reason: 'history_pruned' })
  t.equal(stale.events.length, 0)
  const recent = await connectClient(t, instance, alice, { since: { red: 15 } })
  await recent.waitFor('16-20', () => recent.events.length >= 5)
  await pingPong(recent)
  t.same(seqsOf(recent.events, 'red'), seqRange(16, 20))

  // New seqs go on from the head, never reusing pruned ones.
  const next = await api(instance.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 't21' } })
  t.equal(next.status, 201)
  await recent.waitFor('21', () => recent.lastSeq('red') === 21)
  await stale.waitFor('21 after the resync', () => stale.lastSeq('red') === 21)
  t.same(seqsOf(stale.events, 'red'), [21], 'the resynced client gets the live stream from the resync seq on')
})

eachBackend(t, 'unpublished events (the outbox) and everything after them are never pruned', async (t, backend) => {
  const database = await testDatabase(t, backend)
  const memoryBus = new MemoryBus()
  let lost = false
  const instance = await startInstance(t, {
    ...database,
    realtime: {
      broker: { memoryBus },
      hub: {
        relayIntervalMs: 0,
        retention: { maxEventsPerTeam: 2, pruneIntervalMs: 0 },
        // The first publish of "stuck" is lost: that event stays in the outbox.
        [kBeforePublish]: (event: LoggedEvent) => { if (!lost && event.payload.includes('"title":"stuck"')) { lost = true; throw new Error('test: lost publish') } }
      }
    }
  })
  const { taskRepository: repository, atlasRetention: retention } = instance.app
  for (let i = 1; i <= 10; i++) await repository.create('red', { title: i === 3 ? 'stuck' : `t${i}` }, { actor: 'alice' })
  await waitUntil('all but seq 3 published', async () => (await repository.unpublished(Date.now() + 1000, 10)).length === 1)
  await retention.prune()
  t.same(await repository.history('red'), { head: 10, prunedThrough: 2 }, 'pruning stops before the unpublished event')
  t.same(await eventSeqs(repository, 'red'), seqRange(3, 10))

  // Another instance starts: its start-up relay publishes the outbox, and pruning can go on.
  await startInstance(t, { ...database, realtime: { broker: { memoryBus } } })
  await waitUntil('seq 3 relayed and marked', async () => (await repository.unpublished(Date.now() + 1000, 10)).length === 0)
  await retention.prune()
  t.same(await repository.history('red'), { head: 10, prunedThrough: 8 })
  t.same(await eventSeqs(repository, 'red'), [9, 10])
})

eachBackend(t, 'a stream that falls behind pruned history tells its clients to resync instead of skipping silently', async (t, backend) => {
  const database = await testDatabase(t, backend)
  const instance = await startInstance(t, { ...database })
  const alice = await tokenFor('alice', ['red'])
  const client = await connectClient(t, instance, alice)
  t.equal((await api(instance.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 'seen' } })).status, 201)
  await client.waitFor('seq 1', () => client.events.length === 1)

  // Another writer whose messages never reached this instance, then retention ran.
  const { repository: writer } = await openTestRepository(t, database)
  const written: number[] = []
  for (let i = 0; i < 10; i++) written.push((await writer.create('red', { title: `elsewhere ${i}` }, { actor: 'carol' })).event?.seq ?? 0)
  // seq 1 too: its publish succeeded, but the instance records that in batches, maybe not yet.
  await writer.markPublished([1, ...written].map((seq) => ({ teamId: 'red', seq })))
  await writer.prune({ maxEventsPerTeam: 3 })
  t.same(await writer.history('red'), { head: 11, prunedThrough: 8 })

  t.equal((await api(instance.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 'next' } })).status, 201)
  await client.waitFor('seq 12', () => client.lastSeq('red') === 12)
  await pingPong(client)
  const stream = client.frames.filter((f) => f.type === 'resync' || f.type.startsWith('task.')).map((f) => f.type === 'resync' ? `resync:${String(f.seq)}:${String(f.reason)}` : f.seq)
  t.same(stream, [1, 'resync:8:history_pruned', 9, 10, 11, 12], 'the hole 2-8 is announced, then the stream goes on')
})

eachBackend(t, 'mutation ids are forgotten after their TTL', async (t, backend) => {
  const instance = await startInstance(t, { ...await testDatabase(t, backend), realtime: { hub: { retention: { mutationIdTtlMs: 1, pruneIntervalMs: 0 } } } })
  const alice = await tokenFor('alice', ['red'])
  const headers = { 'idempotency-key': 'short-lived' }
  const first = await api(instance.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 'a' }, headers })
  t.equal(first.status, 201)
  t.equal((await api(instance.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 'a' }, headers })).status, 200, 'within the TTL: a replay')
  const startedAt = Date.now()
  await waitUntil('the TTL to pass', () => Date.now() > startedAt + 5)
  await instance.app.atlasRetention.prune()
  const again = await api(instance.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 'a' }, headers })
  t.equal(again.status, 201, 'after the TTL and a prune, the key is new again')
  t.not(again.body.id, first.body.id)
})
