/**
 * Resume: a client whose socket is cut mid-burst reconnects with the last seq it holds and gets
 * exactly what it missed, then the live stream, with neither hole nor duplicate at the seam. When
 * the log cannot serve its seq it is told to resync, and the list endpoint's `seq` lets it go on
 * without a hole. Two instances share one database (SQLite, then PostgreSQL) and an in-process bus.
 */
import t, { type Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { MemoryBus } from '../lib/memory-broker.js'
import type { Task } from '../protocol/schemas.js'
import { api, connectClient, seqRange, startInstance, tokenFor, waitUntil } from './helpers/app.js'
import { eachBackend, testDatabase, type Backend } from './helpers/backends.js'
import { pingPong, seqsOf, TestClient } from './helpers/ws-client.js'

/**
 * Commits `count` task events on `app` through its repository, one per event-loop turn, so a
 * burst goes on while sockets are cut and reopened. Resolves with the last seq.
 */
async function burst (app: FastifyInstance, team: string, count: number, prefix = 'burst'): Promise<number> {
  let last = 0
  for (let i = 0; i < count; i++) {
    last = (await app.taskRepository.create(team, { title: `${prefix} ${i}` }, { actor: 'writer' })).event?.seq ?? last
    await new Promise((resolve) => setImmediate(resolve))
  }
  return last
}

async function twoInstances (t: Test, backend: Backend): Promise<[Awaited<ReturnType<typeof startInstance>>, Awaited<ReturnType<typeof startInstance>>]> {
  const database = await testDatabase(t, backend)
  const memoryBus = new MemoryBus()
  const a = await startInstance(t, { ...database, realtime: { broker: { memoryBus } } })
  const b = await startInstance(t, { ...database, realtime: { broker: { memoryBus } } })
  return [a, b]
}

eachBackend(t, 'client-side cut mid-burst, resume on the other instance with since=team:seq', async (t, backend) => {
  const [a, b] = await twoInstances(t, backend)
  const alice = await tokenFor('alice', ['red'])
  const first = await connectClient(t, a, alice)
  const total = 400
  const running = burst(a.app, 'red', total)
  await first.waitFor('100 events', () => first.events.length >= 100)
  first.socket.terminate()
  await first.closed
  const held = first.lastSeq('red')
  t.same(seqsOf(first.events, 'red'), seqRange(1, held), 'the first connection held an unbroken prefix')

  const second = await connectClient(t, b, alice, { since: { red: held } })
  const subscribed = second.frames.find((f) => f.type === 'subscribed')
  t.equal(subscribed?.teamId, 'red')
  const last = await running
  t.equal(last, total)
  t.ok(held < total, `the cut came mid-burst (at seq ${held} of ${total})`)
  await second.waitFor('the end of the burst', () => second.lastSeq('red') >= total, 20_000)
  await pingPong(second)
  t.same([...seqsOf(first.events, 'red'), ...seqsOf(second.events, 'red')], seqRange(1, total), 'nothing missing, nothing twice, in order')
  t.equal(Number(subscribed?.seq) - held, Number(subscribed?.replayed), 'the subscribed frame counts the replayed events')
})

eachBackend(t, 'server-side cut mid-burst, resume with a subscribe frame carrying since', async (t, backend) => {
  const [a, b] = await twoInstances(t, backend)
  const alice = await tokenFor('alice', ['red', 'blue'])
  const first = await connectClient(t, b, alice, { teams: ['red'] })
  const total = 300
  const running = burst(a.app, 'red', total)
  await first.waitFor('80 events', () => first.events.length >= 80)
  // Cut by the server: every socket of instance B is destroyed.
  for (const socket of b.app.websocketServer.clients) socket.terminate()
  await first.closed
  const held = first.lastSeq('red')

  // A new connection to blue only, then a subscribe frame resuming red.
  const second = await connectClient(t, a, alice, { teams: ['blue'] })
  second.send({ type: 'subscribe', teams: ['red'], since: { red: held } })
  await second.ready(['red'])
  const last = await running
  t.ok(held < last, `the cut came mid-burst (at seq ${held} of ${last})`)
  await second.waitFor('the end of the burst', () => second.lastSeq('red') >= total, 20_000)
  await pingPong(second)
  t.same([...seqsOf(first.events, 'red'), ...seqsOf(second.events, 'red')], seqRange(1, total), 'nothing missing, nothing twice, in order')
})

eachBackend(t, 'resync: history pruned, ahead of the log, and continuing from the list seq without a hole', async (t, backend) => {
  const instance = await startInstance(t, { ...await testDatabase(t, backend), realtime: { hub: { retention: { maxEventsPerTeam: 10, pruneIntervalMs: 0 } } } })
  const { app } = instance
  const alice = await tokenFor('alice', ['red'])
  for (let i = 1; i <= 30; i++) await app.taskRepository.create('red', { title: `task ${i}` }, { actor: 'alice' })
  // Unpublished events are never pruned (they are the outbox): wait for the broker to take them.
  await waitUntil('events 1-30 published', async () => (await app.taskRepository.unpublished(Date.now() + 1000, 1)).length === 0)
  await app.atlasRetention.prune()
  t.same(await app.taskRepository.history('red'), { head: 30, prunedThrough: 20 }, 'the log keeps the last 10 events')

  const pruned = await connectClient(t, instance, alice, { since: { red: 19 } })
  await pingPong(pruned)
  t.same(pruned.frames.filter((f) => f.type === 'resync' || f.type === 'subscribed'), [{ type: 'resync', teamId: 'red', seq: 30, reason: 'history_pruned' }])
  t.equal(pruned.events.length, 0, 'no partial replay with a hole in it')

  const edge = await connectClient(t, instance, alice, { since: { red: 20 } })
  await edge.waitFor('events 21-30', () => edge.events.length >= 10)
  await pingPong(edge)
  t.same(seqsOf(edge.events, 'red'), seqRange(21, 30), 'since = prunedThrough is still served from the log')
  t.same(edge.frames.find((f) => f.type === 'subscribed'), { type: 'subscribed', teamId: 'red', seq: 30, replayed: 10 })

  const ahead = await connectClient(t, instance, alice, { since: { red: 31 } })
  await pingPong(ahead)
  t.same(ahead.frames.filter((f) => f.type === 'resync' || f.type === 'subscribed'), [{ type: 'resync', teamId: 'red', seq: 30, reason: 'ahead_of_log' }])

  // The resyncing client goes on: events arrive while it fetches the list; it applies only
  // those after the list's seq.
  const kept = (await app.taskRepository.list('red')).tasks
  await app.taskRepository.update('red', kept[0].id, { title: 'changed before the list' }, { actor: 'bob' })
  await app.taskRepository.create('red', { title: 'created before the list' }, { actor: 'bob' })
  await pruned.waitFor('31-32', () => pruned.events.length >= 2)
  const listed = await api<{ tasks: Task[], seq: number }>(instance.baseUrl, 'GET', '/teams/red/tasks', { token: alice })
  t.equal(listed.body.seq, 32)
  await app.taskRepository.update('red', kept[1].id, { status: 'done' }, { actor: 'bob' })
  await app.taskRepository.delete('red', kept[2].id, { actor: 'bob' })
  await app.taskRepository.create('red', { title: 'created after the list' }, { actor: 'bob' })
  await pruned.waitFor('33-35', () => pruned.lastSeq('red') >= 35)
  await pingPong(pruned)
  t.same(seqsOf(pruned.events, 'red'), seqRange(31, 35), 'after the resync the stream went on from its seq, unbroken')
  const state = new Map(listed.body.tasks.map((task) => [task.id, task]))
  const applied: number[] = []
  for (const event of pruned.events) {
    if (event.seq <= listed.body.seq) continue
    applied.push(event.seq)
    if (event.type === 'task.deleted') state.delete(event.taskId)
    else state.set(event.taskId, event.task)
  }
  t.same(applied, [33, 34, 35])
  const now = await api<{ tasks: Task[], seq: number }>(instance.baseUrl, 'GET', '/teams/red/tasks', { token: alice })
  t.equal(now.body.seq, 35)
  t.same([...state.values()].sort((x, y) => x.id.localeCompare(y.id)), now.body.tasks.sort((x, y) => x.id.localeCompare(y.id)), 'list + events after its seq = the current state')
})

eachBackend(t, 'a resume on a connection is served in one step with joining: a burst during many resumes leaves no seam', async (t, backend) => {
  const [a, b] = await twoInstances(t, backend)
  const alice = await tokenFor('alice', ['red'])
  const total = 300
  const running = burst(a.app, 'red', total)
  // Clients that each hold a different prefix resume one after another while the burst runs.
  const resumed: Array<{ since: number, client: TestClient }> = []
  for (let i = 0; i < 8; i++) {
    const head = await a.app.taskRepository.headSeq('red')
    const since = Math.max(0, head - 5 - i)
    resumed.push({ since, client: await connectClient(t, i % 2 === 0 ? a : b, alice, { since: { red: since } }) })
  }
  const last = await running
  for (const { since, client } of resumed) {
    await client.waitFor(`the end of the burst (since ${since})`, () => client.lastSeq('red') >= last, 20_000)
    await pingPong(client)
    t.same(seqsOf(client.events, 'red'), seqRange(since + 1, last), `resumed from ${since}: every later seq once, in order`)
  }
})

eachBackend(t, 'a long resume (maxReplayEvents events, several MiB) completes, reconnecting with the last seq after any 4008', async (t, backend) => {
  const instance = await startInstance(t, { ...await testDatabase(t, backend), realtime: { hub: { maxReplayEvents: 10_000 } } })
  const { app } = instance
  const alice = await tokenFor('alice', ['red'])
  const description = 'd'.repeat(200)
  for (let i = 1; i <= 10_000; i++) await app.taskRepository.create('red', { title: `task ${i}`, description }, { actor: 'writer' })
  // What a client does with 4008: reconnect and resume from the last seq it holds.
  const received: number[] = []
  const cuts: number[] = []
  for (let attempt = 1; attempt <= 20; attempt++) {
    const since = received.at(-1) ?? 0
    const client = new TestClient(`${instance.wsUrl}?access_token=${alice}&since=red:${since}`)
    t.teardown(async () => { await client.close() })
    await client.opened()
    const subscribed = (): boolean => client.frames.some((f) => f.type === 'subscribed')
    await client.waitFor('the subscribed frame or a close', () => subscribed() || client.socket.readyState === client.socket.CLOSED, 30_000)
    const outcome = subscribed() ? 'subscribed' : (await client.closed).code
    received.push(...seqsOf(client.events, 'red'))
    if (outcome === 'subscribed') {
      await app.taskRepository.create('red', { title: 'live' }, { actor: 'writer' })
      await client.waitFor('the live event', () => client.lastSeq('red') === 10_001)
      received.push(10_001)
      break
    }
    t.equal(outcome, 4008, 'only ever cut off as a slow consumer')
    cuts.push(client.events.length)
  }
  t.same(received, seqRange(1, 10_001), 'every event once, in order, across the reconnects')
  t.comment(`resume of 10,000 events (~${Math.round(10_000 * 480 / 1024 / 1024 * 10) / 10} MiB): ${cuts.length} cut-off(s) with 4008 before it completed (events per cut attempt: ${cuts.join(', ') || 'none'})`)
})
