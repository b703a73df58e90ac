import t from 'tap'
import { Hub, type HubClient } from '../lib/hub.js'
import { MemoryBroker, MemoryBus } from '../lib/memory-broker.js'
import { OutboxRelay } from '../lib/outbox-relay.js'
import { silentLogger } from '../lib/logger.js'
import { waitUntil } from './helpers/app.js'
import type { ServerControlFrame } from '../protocol/schemas.js'
import type { SharedFrame } from '../lib/shared-frame.js'
import type { TaskRepository } from '../lib/repository.js'
import { eachBackend, openTestRepository, testDatabase } from './helpers/backends.js'

/** Records what the hub sends, as the seqs of events and the control frames, in order. */
class RecordingClient implements HubClient {
  readonly received: Array<number | ServerControlFrame> = []
  closed = false
  wants (): boolean { return true }
  sendEvent (frame: SharedFrame): void { this.received.push((JSON.parse(frame.payload.toString()) as { seq: number }).seq) }
  sendControl (frame: ServerControlFrame): void { this.received.push(frame) }
}

/**
 * The repository, as the hub sees it, when another process prunes the log right after this one
 * read the team's history (armed by `pruneNext()`, once).
 */
function prunedBehindItsBack (repository: TaskRepository): { repository: TaskRepository, pruneNext (): void } {
  let armed = false
  const wrapped = new Proxy(repository, {
    get (target, key) {
      const value = Reflect.get(target, key, target) as unknown
      if (typeof value !== 'function') return value
      if (key !== 'history') return (value as (...args: unknown[]) => unknown).bind(target)
      return async (teamId: string) => {
        const seen = await target.history(teamId)
        if (armed) {
          armed = false
          await target.markPublished(await target.eventsAfter(teamId, 0, 1000))
          await target.prune({ maxEventsPerTeam: 2 })
        }
        return seen
      }
    }
  })
  return { repository: wrapped, pruneNext: () => { armed = true } }
}

eachBackend(t, 'a resume whose history is pruned between reading it and replaying it gets a resync, not a hole', async (t, backend) => {
  const { repository } = await openTestRepository(t, await testDatabase(t, backend))
  const pruning = prunedBehindItsBack(repository)
  for (let i = 1; i <= 6; i++) await repository.create('red', { title: `task ${i}` }, { actor: 'alice' })
  const hub = new Hub({ repository: pruning.repository, broker: new MemoryBroker() })
  t.teardown(() => { hub.close() })

  const client = new RecordingClient()
  pruning.pruneNext()
  await hub.join(client, 'red', 1)
  t.same(client.received, [{ type: 'resync', teamId: 'red', seq: 6, reason: 'history_pruned' }], 'told to resync; events 5 and 6 alone would have hidden the hole 2-4')
  t.same(await repository.history('red'), { head: 6, prunedThrough: 4 }, 'the log was pruned behind the hub\'s back')

  await repository.create('red', { title: 'live' }, { actor: 'alice' })
  t.same(client.received.at(-1), 7, 'and live events follow the resync')
})

/**
 * The repository with its log reads held back: each read takes its snapshot at once and answers
 * `turns` turns of the event loop later, as an asynchronous database would, while commits go on.
 */
function slowReads (repository: TaskRepository, turns: () => number): TaskRepository {
  const held = new Set<PropertyKey>(['history', 'headSeq', 'eventsAfter'])
  return new Proxy(repository, {
    get (target, key) {
      const value = Reflect.get(target, key, target) as unknown
      if (typeof value !== 'function') return value
      if (!held.has(key)) return (value as (...args: unknown[]) => unknown).bind(target)
      return async (...args: unknown[]) => {
        const answer = await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args)
        for (let i = turns(); i > 0; i--) await new Promise((resolve) => setImmediate(resolve))
        return answer
      }
    }
  })
}

eachBackend(t, 'joins whose log reads are held back while local and remote events keep coming: each client gets every event once, in order', async (t, backend) => {
  // Two hosts on one database: each its own connection(s) and repository.
  const database = await testDatabase(t, backend)
  const { repository: local } = await openTestRepository(t, database)
  const { repository: remote } = await openTestRepository(t, database)
  const bus = new MemoryBus()
  // The other host publishes what it commits; this host's hub hears it through the bus.
  const relay = new OutboxRelay({ repository: remote, broker: new MemoryBroker({ bus }), logger: silentLogger, relayIntervalMs: 0, relayGraceMs: 1000 })
  t.teardown(async () => { await relay.close(0) })
  let seed = 7
  const random = (n: number): number => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % n }
  const hub = new Hub({ repository: slowReads(local, () => 1 + random(8)), broker: new MemoryBroker({ bus }) })
  t.teardown(() => { hub.close() })
  for (let i = 0; i < 10; i++) await local.create('red', { title: `before ${i}` }, { actor: 'alice' })

  const clients: Array<{ client: RecordingClient, since: number | undefined }> = []
  const joins: Array<Promise<void>> = []
  const total = 300
  for (let i = 0; i < total; i++) {
    await (random(2) === 0 ? local : remote).create('red', { title: `during ${i}` }, { actor: 'bob' })
    if (i % 10 === 0) {
      const head = await local.headSeq('red')
      const client = new RecordingClient()
      const since = i % 30 === 0 ? undefined : random(head + 1)
      clients.push({ client, since })
      joins.push(hub.join(client, 'red', since))
    }
    await new Promise((resolve) => setImmediate(resolve))
  }
  await Promise.all(joins)
  const last = 10 + total
  const eventsOf = (client: RecordingClient): number[] => client.received.filter((r): r is number => typeof r === 'number')
  await waitUntil('every client has the last event', () => clients.every(({ client }) => eventsOf(client).at(-1) === last))
  for (const { client, since } of clients) {
    const seqs = eventsOf(client)
    const from = since === undefined ? seqs[0] : since + 1
    t.same(seqs, Array.from({ length: last - from + 1 }, (_, k) => from + k), `since ${String(since)}: ${from}..${last}, each once, in order`)
    const controls = client.received.filter((r) => typeof r !== 'number')
    t.equal(controls.length, 1, 'one subscribed frame')
    const at = client.received.findIndex((r) => typeof r !== 'number')
    t.same(controls[0], { type: 'subscribed', teamId: 'red', seq: since === undefined ? from - 1 : (client.received[at - 1] as number | undefined) ?? since, replayed: since === undefined ? 0 : at }, 'after the replayed events, naming the last of them')
  }
})

eachBackend(t, 'events committed while a new stream reads the head of the log are held and handed on, with no later event to reveal them', async (t, backend) => {
  const { repository } = await openTestRepository(t, await testDatabase(t, backend))
  let release: () => void = () => {}
  const gate = new Promise<void>((resolve) => { release = resolve })
  // The head is read (0) and its answer held until the gate opens.
  const held = new Proxy(repository, {
    get (target, key) {
      const value = Reflect.get(target, key, target) as (...args: unknown[]) => unknown
      if (key !== 'headSeq') return typeof value === 'function' ? value.bind(target) : value
      return async (...args: unknown[]) => { const head = await value.apply(target, args); await gate; return head }
    }
  })
  const hub = new Hub({ repository: held, broker: new MemoryBroker() })
  t.teardown(() => { hub.close() })
  const client = new RecordingClient()
  const joined = hub.join(client, 'red')
  for (let i = 1; i <= 3; i++) await repository.create('red', { title: `while the head is read ${i}` }, { actor: 'alice' })
  release()
  await joined
  t.same(client.received, [{ type: 'subscribed', teamId: 'red', seq: 3, replayed: 0 }], 'live from after the events committed meanwhile')
  await repository.create('red', { title: 'next' }, { actor: 'alice' })
  t.same(client.received.at(-1), 4)
})
