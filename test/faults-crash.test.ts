/**
 * A process killed between commit and publish: the event is committed (it is in the log) and
 * was never handed to Redis. The restarted process's outbox relay must deliver it to clients of
 * the other instance. The child is a real `node` process (tap's TypeScript loader) SIGKILLed
 * by its own beforePublish hook right after the commit of the marked mutation. On SQLite (one
 * file) and on PostgreSQL (one database).
 */
import t from 'tap'
import { api, connectClient, seqRange, startInstance, tokenFor, waitUntil } from './helpers/app.js'
import { eachBackend, isPublished, openTestRepository, testDatabase } from './helpers/backends.js'
import { startChildInstance } from './helpers/child-instance.js'
import { startRedis } from './helpers/redis.js'
import { pingPong, seqsOf } from './helpers/ws-client.js'

eachBackend(t, 'an event committed by a process killed before publishing reaches the other instance after the restart', async (t, backend) => {
  const redis = await startRedis(t)
  const database = await testDatabase(t, backend)
  // The surviving instance relays only at its own start (relayIntervalMs 0): it must not be
  // the one that publishes the crashed process's event. The child relays only at start too,
  // so what delivers is the restarted process's start-up relay of its outbox.
  const survivor = await startInstance(t, { ...database, redisUrl: redis.url, realtime: { hub: { relayIntervalMs: 0 } } })
  const child = await startChildInstance(t, { ...database, redisUrl: redis.url, relayIntervalMs: 0, crashOnTitle: 'crash here' })
  const alice = await tokenFor('alice', ['red'])
  const watcher = await connectClient(t, survivor, alice)
  const onChild = await connectClient(t, child, alice)

  for (const title of ['one', 'two']) {
    t.equal((await api(child.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title } })).status, 201)
  }
  await watcher.waitFor('seqs 1-2 published by the child', () => watcher.events.length === 2)

  // The child commits this mutation, then its hook SIGKILLs it before the publish.
  const crashed = await api(child.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 'crash here' }, headers: { 'idempotency-key': 'crash-1' } })
    .then(() => 'answered', (err: Error) => `no answer (${(err.cause as Error | undefined)?.message ?? err.message})`)
  const exit = await child.exited
  t.equal(exit.signal, 'SIGKILL', 'the child was killed by SIGKILL')
  t.match(crashed, /^no answer/, 'the HTTP request got no answer')
  await onChild.closed

  // The log as any instance reads it, through a repository of its own.
  const { repository } = await openTestRepository(t, database)
  const [row] = await repository.eventsAfter('red', 2, 1)
  t.ok(row?.seq === 3 && JSON.parse(row.payload).task.title === 'crash here', 'the mutation committed: its event is seq 3 in the log')
  t.equal(await isPublished(repository, 'red', 3), false, 'and it was never published')
  await pingPong(watcher)
  t.same(seqsOf(watcher.events, 'red'), [1, 2], 'the survivor has not seen seq 3')

  // Same database, same Redis, a new process: its outbox relay publishes seq 3.
  const restarted = await startChildInstance(t, { ...database, redisUrl: redis.url, relayIntervalMs: 0 })
  await watcher.waitFor('seq 3 relayed by the restarted process', () => watcher.events.length >= 3, 15_000)
  await pingPong(watcher)
  t.same(seqsOf(watcher.events, 'red'), [1, 2, 3], 'seq 3 delivered once, in order')
  t.equal((watcher.events[2] as { task?: { title: string } }).task?.title, 'crash here')
  await waitUntil('seq 3 marked published', async () => await isPublished(repository, 'red', 3))
  t.equal(await isPublished(repository, 'red', 3), true, 'the relay marked it published')

  // The client never got its answer, so it retries with the same key: the stored result comes
  // back, and no second task or event is made.
  const retry = await api(restarted.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 'crash here' }, headers: { 'idempotency-key': 'crash-1' } })
  t.equal(retry.status, 200)
  t.equal(retry.headers.get('idempotency-replayed'), 'true')
  t.equal(retry.body.title, 'crash here')
  t.equal(retry.body.id, JSON.parse(row?.payload ?? '{}').task.id, 'the retry returns the task the crashed request created')

  t.equal((await api(restarted.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 'after' } })).status, 201)
  await watcher.waitFor('seq 4', () => watcher.events.length >= 4)
  await pingPong(watcher)
  t.same(seqsOf(watcher.events, 'red'), seqRange(1, 4), 'the stream goes on with no hole and no duplicate')
  const list = await api(survivor.baseUrl, 'GET', '/teams/red/tasks', { token: alice })
  t.same(list.body.tasks.map((task: { title: string }) => task.title), ['one', 'two', 'crash here', 'after'])
  t.equal(list.body.seq, 4)
  await restarted.stop()
})
