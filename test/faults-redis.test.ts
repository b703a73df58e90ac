/**
 * Redis faults against the delivery guarantees: Redis killed and restarted under load on two
 * instances, a lost publish filled from the log (gap fill), and a reconnect that catches up
 * from the log although no event follows it. Real redis-server, real database (a SQLite file,
 * then a PostgreSQL database), real sockets.
 */
import t, { type Test } from 'tap'
import { Redis } from 'ioredis'
import { kBeforePublish } from '../lib/outbox-relay.js'
import type { TaskRepository } from '../lib/repository.js'
import type { LoggedEvent } from '../lib/types.js'
import { api, connectClient, seqRange, seqReport, startInstance, tokenFor, waitUntil, type Instance } from './helpers/app.js'
import { eachBackend, isPublished, openTestRepository, testDatabase, type DatabaseConfig } from './helpers/backends.js'
import { startChildInstance } from './helpers/child-instance.js'
import { startRedis } from './helpers/redis.js'
import { pingPong, seqsOf, type TestClient } from './helpers/ws-client.js'

/**
 * The shared log, as an operator would look at it: through a repository of its own on the
 * instances' database (no hub: what it commits is in the log only, like the commits of an
 * instance whose messages are lost).
 */
async function inspect (t: Test, database: DatabaseConfig): Promise<{
  repository: TaskRepository
  head (team: string): Promise<number>
  unpublished (): Promise<number>
  published (team: string, seq: number): Promise<boolean>
  payloads (team: string): Promise<string[]>
}> {
  const { repository } = await openTestRepository(t, database)
  return {
    repository,
    head: async (team) => await repository.headSeq(team),
    unpublished: async () => await repository.unpublishedCount(),
    published: async (team, seq) => await isPublished(repository, team, seq),
    payloads: async (team) => (await repository.eventsAfter(team, 0, 100_000)).map((e) => e.payload)
  }
}

interface Driver {
  /** Mutations answered so far (any status). */
  readonly done: number
  readonly statuses: number[]
  /** Mutations that were not answered 2xx, with why. */
  readonly failures: string[]
  stop (): Promise<void>
}

/**
 * Mutations over HTTP from `workers` concurrent loops, round-robin over the instances and teams:
 * creates, title updates and deletes. Each worker only touches tasks it created, so every
 * mutation must succeed and yields exactly one event.
 */
function drive (instances: Instance[], token: string, teams: string[], workers: number): Driver {
  const statuses: number[] = []
  const failures: string[] = []
  let stopped = false
  let counter = 0
  const worker = async (w: number): Promise<void> => {
    const mine: Array<{ team: string, id: string }> = []
    while (!stopped) {
      const n = counter++
      const instance = instances[n % instances.length]
      const team = teams[Math.floor(n / instances.length) % teams.length]
      const own = mine.filter((task) => task.team === team)
      let response
      try {
        if (own.length > 0 && n % 5 === 3) {
          const target = own[0]
          response = await api(instance.baseUrl, 'DELETE', `/teams/${team}/tasks/${target.id}`, { token })
          if (response.status === 204) mine.splice(mine.indexOf(target), 1)
        } else if (own.length > 0 && n % 3 === 1) {
          response = await api(instance.baseUrl, 'PATCH', `/teams/${team}/tasks/${own[own.length - 1].id}`, { token, body: { title: `w${w} update ${n}` } })
        } else {
          response = await api(instance.baseUrl, 'POST', `/teams/${team}/tasks`, { token, body: { title: `w${w} task ${n}` } })
          if (response.status === 201) mine.push({ team, id: response.body.id })
        }
        statuses.push(response.status)
        if (response.status < 200 || response.status > 299) failures.push(`#${n}: ${response.status} ${JSON.stringify(response.body)}`)
      } catch (err) {
        statuses.push(0)
        failures.push(`#${n}: ${(err as Error).message}`)
      }
    }
  }
  const running = Promise.all(Array.from({ length: workers }, async (_, w) => { await worker(w) }))
  return {
    get done () { return statuses.length },
    statuses,
    failures,
    stop: async () => { stopped = true; await running }
  }
}

eachBackend(t, 'Redis killed and restarted while two instances take mutations: every client gets every event once, in order', async (t, backend) => {
  const redis = await startRedis(t)
  const database = await testDatabase(t, backend)
  const realtime = { hub: { relayIntervalMs: 200 } }
  const a = await startInstance(t, { ...database, redisUrl: redis.url, realtime })
  const b = await startInstance(t, { ...database, redisUrl: redis.url, realtime })
  const db = await inspect(t, database)
  const teams = ['red', 'blue']
  const writer = await tokenFor('writer', teams)
  const both = await tokenFor('alice', teams)
  const redOnly = await tokenFor('bob', ['red'])

  const clients: Array<{ name: string, client: TestClient, teams: string[] }> = []
  for (const [name, instance] of [['A', a], ['B', b]] as const) {
    clients.push({ name: `${name}/alice`, client: await connectClient(t, instance, both), teams })
    clients.push({ name: `${name}/bob`, client: await connectClient(t, instance, redOnly), teams: ['red'] })
  }

  const driver = drive([a, b], writer, teams, 4)
  await waitUntil('40 mutations before the fault', () => driver.done >= 40, 20_000)
  await redis.kill()
  const atKill = driver.done
  // Awaited while Redis is dead: if a mutation waited on Redis this would never complete.
  await waitUntil('60 mutations answered while Redis is down', () => driver.done >= atKill + 60, 20_000)
  const duringOutage = driver.done - atKill
  await redis.restart()
  const atRestart = driver.done
  await waitUntil('40 mutations after the restart', () => driver.done >= atRestart + 40, 20_000)
  await driver.stop()

  t.same(driver.failures, [], 'no HTTP mutation failed')
  t.ok(driver.statuses.every((s) => s >= 200 && s <= 299), 'every mutation answered 2xx')
  const heads = Object.fromEntries(await Promise.all(teams.map(async (team) => [team, await db.head(team)])))
  t.equal(heads.red + heads.blue, driver.done, 'one event per mutation, no more, no less')

  for (const { name, client, teams: subscribed } of clients) {
    await client.waitFor(`${name} to hold every event`, () => subscribed.every((team) => client.lastSeq(team) >= heads[team] &&
      seqsOf(client.events, team).length >= heads[team]), 20_000)
  }
  // Outbox drained: once Redis is back every event is marked published.
  await waitUntil('the outbox to drain', async () => await db.unpublished() === 0, 20_000)

  const lines: string[] = []
  for (const { name, client, teams: subscribed } of clients) {
    for (const team of subscribed) {
      const seqs = seqsOf(client.events, team)
      const report = seqReport(seqs, heads[team])
      lines.push(`${name} ${team}: sent ${heads[team]}, delivered ${report.delivered}, duplicates ${report.duplicates}, reorderings ${report.reorderings}, missing ${report.missing.length}`)
      t.same(seqs, seqRange(1, heads[team]), `${name} ${team}: every seq exactly once, in order`)
    }
    // The bytes are the log's: what a client holds is what was committed.
    t.same(client.events.filter((e) => e.teamId === 'red').map((e) => JSON.stringify(e)), await db.payloads('red'), `${name}: red events equal the log`)
  }
  t.comment(`mutations: ${driver.done} (${duringOutage} while Redis was down), all 2xx`)
  for (const line of lines) t.comment(line)
})

eachBackend(t, 'gap fill: an event whose publish was lost is read from the log before the next one is delivered', async (t, backend) => {
  const redis = await startRedis(t)
  const database = await testDatabase(t, backend)
  // Relay only at start: nothing but the gap fill can bring seq 2 to the other instance.
  const a = await startInstance(t, { ...database, redisUrl: redis.url, realtime: { hub: { relayIntervalMs: 0 } } })
  const b = await startInstance(t, {
    ...database,
    redisUrl: redis.url,
    realtime: {
      hub: {
        relayIntervalMs: 0,
        [kBeforePublish]: (event: LoggedEvent) => { if (event.payload.includes('"title":"lost"')) throw new Error('test: this publish is lost') }
      }
    }
  })
  const db = await inspect(t, database)
  const alice = await tokenFor('alice', ['red'])
  const onA = await connectClient(t, a, alice)
  const onB = await connectClient(t, b, alice)

  t.equal((await api(b.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 'one' } })).status, 201)
  await onA.waitFor('seq 1 on A', () => onA.events.length === 1)
  const lost = await api(b.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 'lost' } })
  t.equal(lost.status, 201, 'the mutation whose publish is lost still succeeds')
  await pingPong(onA)
  await onB.waitFor('seq 2 on B (local)', () => onB.events.length === 2)
  t.same(seqsOf(onA.events, 'red'), [1], 'seq 2 never went through Redis: A does not have it yet')
  t.equal(await db.published('red', 2), false, 'seq 2 is still in the outbox')

  t.equal((await api(b.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 'three' } })).status, 201)
  await onA.waitFor('seq 3 on A', () => onA.lastSeq('red') >= 3)
  t.same(seqsOf(onA.events, 'red'), [1, 2, 3], 'seq 3 arrived by Redis with 2 missing: 2 was read from the log first')
  t.same(onA.events.map((e) => (e as { task?: { title: string } }).task?.title), ['one', 'lost', 'three'])
  t.same(seqsOf(onB.events, 'red'), [1, 2, 3])
  await waitUntil('seq 3 marked published', async () => await db.published('red', 3))
  t.equal(await db.published('red', 2), false, 'seq 2 reached A through the log, not through the broker')
})

eachBackend(t, 'reconnect catch-up: after Redis returns, a stream catches up from the log with no later event to trigger it', async (t, backend) => {
  const redis = await startRedis(t)
  const database = await testDatabase(t, backend)
  const a = await startInstance(t, { ...database, redisUrl: redis.url, realtime: { hub: { relayIntervalMs: 0 } } })
  const alice = await tokenFor('alice', ['red'])
  const client = await connectClient(t, a, alice)
  t.equal((await api(a.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 'before' } })).status, 201)
  await client.waitFor('seq 1', () => client.events.length === 1)

  await redis.kill()
  // Another writer of the same log (an instance whose messages are lost while A's subscription
  // is down). It has no hub: its events exist only in the database.
  const { repository: writer } = await openTestRepository(t, database)
  for (const title of ['while down 1', 'while down 2', 'while down 3']) await writer.create('red', { title }, { actor: 'carol' })
  await pingPong(client)
  t.same(seqsOf(client.events, 'red'), [1], 'nothing reached A while Redis was down')

  await redis.restart()
  // No event is committed from here on: only the reconnect itself can bring 2..4.
  await client.waitFor('the events committed while Redis was down', () => client.events.length >= 4, 15_000)
  await pingPong(client)
  t.same(seqsOf(client.events, 'red'), [1, 2, 3, 4], 'caught up from the log, once each, in order')
  t.same(client.events.slice(1).map((e) => (e as { task?: { title: string } }).task?.title), ['while down 1', 'while down 2', 'while down 3'])
})

eachBackend(t, 'a client that connects while Redis is down gets local events at once and the rest when Redis is back', async (t, backend) => {
  const redis = await startRedis(t)
  const database = await testDatabase(t, backend)
  const a = await startInstance(t, { ...database, redisUrl: redis.url, realtime: { hub: { relayIntervalMs: 0 } } })
  const b = await startInstance(t, { ...database, redisUrl: redis.url, realtime: { hub: { relayIntervalMs: 0 } } })
  const alice = await tokenFor('alice', ['red'])
  t.equal((await api(a.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 'before' } })).status, 201)

  await redis.kill()
  // Nobody on A was subscribed to red: its subscription has to be made while Redis is down.
  const late = await connectClient(t, a, alice, { since: { red: 0 } })
  t.same(seqsOf(late.events, 'red'), [1], 'the resume was served from the log')
  t.equal((await api(a.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 'local while down' } })).status, 201)
  await late.waitFor('the local event while Redis is down', () => late.lastSeq('red') >= 2)
  t.equal((await api(b.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 'elsewhere while down' } })).status, 201)

  await redis.restart()
  await late.waitFor('the other instance\'s event, after Redis is back', () => late.lastSeq('red') >= 3, 15_000)
  t.equal((await api(b.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 'after' } })).status, 201)
  await late.waitFor('seq 4 through Redis', () => late.lastSeq('red') >= 4)
  await pingPong(late)
  t.same(seqsOf(late.events, 'red'), [1, 2, 3, 4])
})

eachBackend(t, 'an outbox larger than one relay page while Redis is down: the instance stays responsive and everything goes out when Redis is back', async (t, backend) => {
  const redis = await startRedis(t)
  const database = await testDatabase(t, backend)
  // In its own process, so that an instance that stops answering fails this test instead of freezing it.
  const relaying = await startChildInstance(t, { ...database, redisUrl: redis.url, relayIntervalMs: 100, relayGraceMs: 0 })
  const watching = await startInstance(t, { ...database, redisUrl: redis.url, realtime: { hub: { relayIntervalMs: 0 } } })
  const db = await inspect(t, database)
  const alice = await tokenFor('alice', ['red'])
  const client = await connectClient(t, watching, alice)
  const attempts = async (): Promise<number> => {
    const response = await fetch(`${relaying.baseUrl}/_test/publish-attempts`, { signal: AbortSignal.timeout(5000) })
      .catch((err: Error) => { throw new Error(`the relaying instance stopped answering: ${err.message}`) })
    return ((await response.json()) as { publishAttempts: number }).publishAttempts
  }

  await redis.kill()
  const writer = db.repository
  const total = 1500
  for (let i = 0; i < total; i++) await writer.create('red', { title: `offline ${i}` }, { actor: 'carol' })
  t.equal(await db.unpublished(), total)
  // Two relay rounds over the whole outbox, all refused by the dead Redis.
  await waitUntil('the outbox relayed (and refused) twice', async () => await attempts() >= 2 * total, 20_000)
  const health = await fetch(`${relaying.baseUrl}/health/live`, { signal: AbortSignal.timeout(5000) }).then((r) => r.status, (err: Error) => err.message)
  t.equal(health, 200, 'the instance still answers HTTP while its outbox is refused')

  await redis.restart()
  await client.waitFor(`all ${total} events`, () => client.lastSeq('red') >= total, 20_000)
  await waitUntil('the outbox to drain', async () => await db.unpublished() === 0, 20_000)
  await pingPong(client)
  t.same(seqsOf(client.events, 'red'), seqRange(1, total), 'every event once, in order')
})
