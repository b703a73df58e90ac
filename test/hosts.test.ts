/**
 * Several hosts (issue #15 part 5): instances of the example that share nothing but PostgreSQL
 * and Redis. Each is a process of its own started in a temporary working directory of its own;
 * with the `namespaces` topology each also has its own network namespace and address, and
 * reaches PostgreSQL and Redis over a veth pair (test/helpers/hosts.ts).
 *
 * And field-level last-write-wins across instances (part 4): two PATCHes of different fields of
 * one task, one through each instance, both inside their transactions at once.
 */
import t, { type Test } from 'tap'
import { readdirSync, realpathSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import pg from 'pg'
import { MemoryBus } from '../lib/memory-broker.js'
import { TASK_STATUSES, type TaskField } from '../protocol/constants.js'
import type { Task, TaskEvent, TaskUpdatedEvent } from '../protocol/schemas.js'
import { api, connectClient, seqRange, startInstance, tokenFor, waitUntil } from './helpers/app.js'
import { eachBackend, openTestRepository, testDatabase } from './helpers/backends.js'
import { namespacesUnavailable, startHosts, type Host, type Topology } from './helpers/hosts.js'
import type { TaskRepository } from '../lib/repository.js'
import { pingPong, seqsOf, type TestClient } from './helpers/ws-client.js'

const noNamespaces = namespacesUnavailable()
const TOPOLOGIES: Array<{ topology: Topology, skip: string | false }> = [
  { topology: 'loopback', skip: false },
  { topology: 'namespaces', skip: noNamespaces === undefined ? false : `no network namespaces here (${noNamespaces})` }
]

/**
 * What "shares nothing" means here, checked: every instance runs in its own working directory
 * (and network namespace, listening on its own address).
 */
function checkIsolation (t: Test, hosts: Host[]): void {
  t.equal(new Set(hosts.map((h) => h.workdir)).size, hosts.length, 'a working directory each')
  for (const [i, host] of hosts.entries()) {
    t.equal(realpathSync(`/proc/${host.pid}/cwd`), realpathSync(host.workdir), `host ${i} runs in its own working directory`)
    if (host.network === undefined) continue
    const identified = spawnSync('ip', ['netns', 'identify', String(host.pid)], { encoding: 'utf8' }).stdout.trim()
    t.equal(identified, host.network.name, `host ${i} runs in its own network namespace`)
    t.equal(new URL(host.baseUrl).hostname, host.network.address, `host ${i} listens on its own address`)
  }
}

/** Once they worked: no host wrote a file of its own, and each reached the services from its own address only. */
function checkNothingShared (t: Test, hosts: Host[]): void {
  for (const [i, host] of hosts.entries()) {
    t.same(readdirSync(host.workdir), [], `host ${i} wrote no file in its working directory`)
    if (host.network !== undefined) t.same([...host.network.peers], [host.network.address], `host ${i} reached PostgreSQL and Redis from its own address only`)
  }
}

async function create (host: Pick<Host, 'baseUrl'>, token: string, team: string, title: string): Promise<Task> {
  const response = await api<Task>(host.baseUrl, 'POST', `/teams/${team}/tasks`, { token, body: { title } })
  if (response.status !== 201) throw new Error(`POST answered ${response.status}: ${JSON.stringify(response.body)}`)
  return response.body
}

async function patch (host: Pick<Host, 'baseUrl'>, token: string, team: string, taskId: string, body: Record<string, unknown>): Promise<Task> {
  const response = await api<Task>(host.baseUrl, 'PATCH', `/teams/${team}/tasks/${taskId}`, { token, body })
  if (response.status !== 200) throw new Error(`PATCH answered ${response.status}: ${JSON.stringify(response.body)}`)
  return response.body
}

async function remove (host: Pick<Host, 'baseUrl'>, token: string, team: string, taskId: string): Promise<void> {
  const response = await api(host.baseUrl, 'DELETE', `/teams/${team}/tasks/${taskId}`, { token })
  if (response.status !== 200 && response.status !== 204) throw new Error(`DELETE answered ${response.status}`)
}

async function allReach (clients: TestClient[], team: string, seq: number, timeoutMs?: number): Promise<void> {
  await Promise.all(clients.map(async (c) => { await c.waitFor(`${team} seq ${seq}`, () => c.lastSeq(team) >= seq, timeoutMs) }))
}

/** A team's events in the shared log after `afterSeq`, as the wire shows them. */
async function logged (repository: TaskRepository, team: string, afterSeq = 0): Promise<TaskEvent[]> {
  return (await repository.eventsAfter(team, afterSeq, 10_000)).map((e) => JSON.parse(e.payload) as TaskEvent)
}

// Three hosts per topology (each takes seconds to start), used by the subtests in turn, a team
// each: the crash, which kills one, comes last. The first two relay often, with a grace over the
// published-mark flush (200 ms): neither relays what the other is about to publish itself, but
// each relays what a killed host never published or never marked (receivers drop what they
// already have). The third relays only at its start: what its clients get of a killed host's
// last event, another host's relay published.
const RELAY = { relayIntervalMs: 100, relayGraceMs: 500 }

for (const { topology, skip } of TOPOLOGIES) {
  t.test(`hosts sharing nothing but PostgreSQL and Redis [${topology}]`, { skip }, async (t) => {
    const { hosts, databaseUrl } = await startHosts(t, topology, [RELAY, { ...RELAY, crashOnTitle: 'crash here' }, { relayIntervalMs: 0 }])
    checkIsolation(t, hosts)
    const { repository } = await openTestRepository(t, { databaseUrl })
    const token = await tokenFor('alice', ['red', 'blue', 'green'])

    await t.test('a mutation through any host reaches the clients of all, in order, once', async (t) => {
      const team = 'red'
      const clients = await Promise.all(hosts.map(async (host) => await connectClient(t, host, token, { teams: [team] })))
      // One at a time, host after host: each event reaches the clients of the hosts that did not make it.
      const tasks: Task[] = []
      for (let i = 0; i < 6; i++) {
        tasks.push(await create(hosts[i % 3], token, team, `task ${i}`))
        await allReach(clients, team, i + 1)
      }
      await patch(hosts[1], token, team, tasks[0].id, { status: 'done' })
      await allReach(clients, team, 7)
      await remove(hosts[2], token, team, tasks[1].id)
      await allReach(clients, team, 8)
      t.same(clients.map((c) => seqsOf(c.events, team)), Array(3).fill(seqRange(1, 8)), 'each event, made on one host, reached the clients of all three')
      t.same(clients[0].events.map((e) => e.type).slice(5), ['task.created', 'task.updated', 'task.deleted'], 'updates and deletes too')

      // All at once: their commits interleave in the one log; each client still sees its order.
      const ROUNDS = 10
      for (let i = 0; i < ROUNDS; i++) await Promise.all(hosts.map(async (host, h) => await create(host, token, team, `${h}.${i}`)))
      // One more through each, in turn: anything a host published earlier reaches a client before these.
      for (const host of hosts) await create(host, token, team, 'last')
      const total = 8 + 3 * ROUNDS + 3
      await allReach(clients, team, total)
      await Promise.all(clients.map(pingPong))
      t.same(clients.map((c) => seqsOf(c.events, team)), Array(3).fill(seqRange(1, total)), 'every seq once, in order, on every host')
      t.same(clients.map((c) => c.events), Array(3).fill(await logged(repository, team)), 'the same events everywhere: the shared log')
      await Promise.all(clients.map(async (c) => { await c.close() }))
    })

    await t.test('a client that was on one host resumes on another with since and gets exactly what it missed', async (t) => {
      const team = 'blue'
      const [a, b, c] = hosts
      const first = await connectClient(t, a, token, { teams: [team] })
      const tasks = [await create(a, token, team, 'one'), await create(b, token, team, 'two'), await create(c, token, team, 'three')]
      await allReach([first], team, 3)
      await pingPong(first)
      t.same(seqsOf(first.events, team), [1, 2, 3], 'it saw seqs 1-3 before it left')
      await first.close()

      // While it is away, every host mutates.
      await create(b, token, team, 'four')
      await patch(c, token, team, tasks[0].id, { assignee: 'bob' })
      await remove(a, token, team, tasks[1].id)
      await create(c, token, team, 'five')
      t.equal(await repository.headSeq(team), 7, 'four events made while it was away')

      const resumed = await connectClient(t, b, token, { teams: [team], since: { [team]: first.lastSeq(team) } })
      await allReach([resumed], team, 7)
      await pingPong(resumed)
      t.same(seqsOf(resumed.events, team), [4, 5, 6, 7], 'exactly the missing events, in order')
      t.same([...first.events, ...resumed.events], await logged(repository, team), 'as the log has them: nothing lost or doubled across the move')

      // And it goes on live, with events of any host.
      for (const host of hosts) await create(host, token, team, 'live')
      await allReach([resumed], team, 10)
      await pingPong(resumed)
      t.same(seqsOf(resumed.events, team), seqRange(4, 10), 'then live events, in order')
      await resumed.close()
    })

    await t.test('a host SIGKILLed between commit and publish: another relays the event, every client gets every event once, in order', async (t) => {
      const team = 'green'
      const [survivor, doomed, observer] = hosts
      const onSurvivor = [await connectClient(t, survivor, token, { teams: [team] }), await connectClient(t, survivor, token, { teams: [team] })]
      const onObserver = await connectClient(t, observer, token, { teams: [team] })
      const watchers = [...onSurvivor, onObserver]
      const onDoomed = await connectClient(t, doomed, token, { teams: [team] })

      for (let i = 0; i < 3; i++) await Promise.all([create(survivor, token, team, `s ${i}`), create(doomed, token, team, `d ${i}`)])
      await allReach([...watchers, onDoomed], team, 6)

      // The doomed host commits this one and SIGKILLs itself before publishing it. Nothing comes
      // after it, so no later event shows a gap: only a relay can deliver it.
      const crashed = await api(doomed.baseUrl, 'POST', `/teams/${team}/tasks`, { token, body: { title: 'crash here' } })
        .then(() => 'answered', (err: Error) => `no answer (${(err.cause as Error | undefined)?.message ?? err.message})`)
      t.equal((await doomed.exited).signal, 'SIGKILL', 'the host was SIGKILLed')
      t.match(crashed, /^no answer/, 'its request got no answer')
      await onDoomed.closed
      const [crashEvent] = await logged(repository, team, 6)
      t.equal(crashEvent?.type === 'task.created' ? crashEvent.task.title : undefined, 'crash here', 'its mutation committed: seq 7 in the log')

      await allReach([onObserver], team, 7, 15_000)
      await waitUntil('the outbox empty', async () => await repository.unpublishedCount() === 0)
      await pingPong(onObserver)
      t.same(seqsOf(onObserver.events, team), seqRange(1, 7), 'seq 7, relayed by the survivor, reached the observer\'s client once, in order')
      // The survivor's broker drops the messages it published itself: its hub takes what its
      // relay publishes from the relay, so its clients need no later event to reveal seq 7.
      for (const c of onSurvivor) await c.waitFor('seq 7 on the relaying host', () => c.lastSeq(team) >= 7)
      t.same(onSurvivor.map((c) => seqsOf(c.events, team)), [seqRange(1, 7), seqRange(1, 7)], 'the clients of the relaying host got the relayed event, with no later one')

      for (let i = 0; i < 3; i++) await create(survivor, token, team, `after ${i}`)
      await allReach(watchers, team, 10)
      await Promise.all(watchers.map(pingPong))
      t.same(watchers.map((c) => seqsOf(c.events, team)), Array(3).fill(seqRange(1, 10)), '0 lost, 0 duplicated, 0 reordered')
      t.same(watchers.map((c) => c.events), Array(3).fill(await logged(repository, team)), 'the shared log, as is')

      // The client of the killed host moves to the survivor and resumes where it was.
      t.equal(onDoomed.lastSeq(team), 6, 'the killed host\'s client had seqs up to 6')
      const moved = await connectClient(t, survivor, token, { teams: [team], since: { [team]: onDoomed.lastSeq(team) } })
      await allReach([moved], team, 10)
      await pingPong(moved)
      t.same(seqsOf(moved.events, team), seqRange(7, 10), 'it gets exactly what it missed, the crashed event included')
    })

    checkNothingShared(t, hosts)
  })
}

// ---------------------------------------------------------------------------------------------
// Field-level last-write-wins across instances

const FIELD_PAIRS: Array<[TaskField, TaskField]> = [['title', 'assignee'], ['status', 'dueDate'], ['description', 'title'], ['assignee', 'status'], ['dueDate', 'description']]

/** A value of `field` for `round` that no created task has (so the PATCH is a change). */
function newValue (field: TaskField, round: number, side: number): string {
  switch (field) {
    case 'title': return `title ${round}.${side}`
    case 'description': return `description ${round}.${side}`
    case 'status': return TASK_STATUSES[1 + round % (TASK_STATUSES.length - 1)]
    case 'assignee': return `user-${round}-${side}`
    case 'dueDate': return `2031-0${1 + round % 9}-1${side}`
  }
}

/**
 * PostgreSQL: a third connection that takes a task's row lock, so that PATCHes arriving then
 * block inside their transactions on that row; `waiting` counts the backends blocked on a lock.
 */
async function rowLocker (t: Test, databaseUrl: string) {
  const holder = new pg.Client({ connectionString: databaseUrl })
  const observer = new pg.Client({ connectionString: databaseUrl })
  await holder.connect()
  await observer.connect()
  t.teardown(async () => { await holder.end(); await observer.end() })
  return {
    hold: async (taskId: string): Promise<void> => {
      await holder.query('begin')
      const locked = await holder.query('select id from tasks where id = $1 for update', [taskId])
      if (locked.rowCount !== 1) throw new Error(`no task ${taskId} to lock`)
    },
    // Outside any transaction, so each count is a fresh look at pg_stat_activity.
    waiting: async (): Promise<number> => (await observer.query<{ n: number }>(
      "select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'")).rows[0].n,
    release: async (): Promise<void> => { await holder.query('commit') }
  }
}

eachBackend(t, 'concurrent PATCHes of different fields through two instances both land (field-level last-write-wins)', async (t, backend) => {
  const database = await testDatabase(t, backend)
  const bus = new MemoryBus()
  const instances = [
    await startInstance(t, { ...database, realtime: { broker: { memoryBus: bus } } }),
    await startInstance(t, { ...database, realtime: { broker: { memoryBus: bus } } })
  ]
  // SQLite's transactions are synchronous and hold the file's write lock from their first
  // statement: there is no moment inside one to hold the other at, so the PATCHes are only sent
  // together. PostgreSQL's wait on the row lock inside their transactions.
  const locker = database.databaseUrl === undefined ? undefined : await rowLocker(t, database.databaseUrl)
  const team = 'red'
  const alice = await tokenFor('alice', [team])
  const watchers = [await connectClient(t, instances[0], alice), await connectClient(t, instances[1], alice)]

  const ROUNDS = 40
  let seq = 0
  const secondThroughEach = [0, 0]
  for (let round = 0; round < ROUNDS; round++) {
    const before = await create(instances[round % 2], alice, team, `lww ${round}`)
    seq++
    const fields = FIELD_PAIRS[round % FIELD_PAIRS.length]
    const values = fields.map((field, side) => newValue(field, round, side))
    await locker?.hold(before.id)
    const answers = Promise.all(fields.map(async (field, side) => await patch(instances[side], alice, team, before.id, { [field]: values[side] })))
    if (locker !== undefined) {
      await waitUntil('both PATCHes blocked on the row inside their transactions', async () => await locker.waiting() === 2)
      await locker.release()
    }
    const answered = await answers
    seq += 2

    await allReach(watchers, team, seq)
    const events = watchers[0].events.filter((e): e is TaskUpdatedEvent => e.type === 'task.updated' && e.taskId === before.id)
    t.equal(events.length, 2, `round ${round}: two events`)
    const [earlier, later] = events
    t.ok(earlier.seq < later.seq, `round ${round}: in seq order`)
    t.same([earlier.task.version, later.task.version], [before.version + 1, before.version + 2], `round ${round}: distinct versions, one after the other`)
    const first = fields.indexOf(earlier.changes[0])
    const second = 1 - first
    t.same([earlier.changes, later.changes], [[fields[first]], [fields[second]]], `round ${round}: each event changed its own field`)
    t.equal(earlier.task[fields[first]], values[first], `round ${round}: the first event has its change`)
    t.equal(earlier.task[fields[second]], before[fields[second]], `round ${round}: and the other field as it was then`)
    t.same([later.task[fields[first]], later.task[fields[second]]], [values[first], values[second]], `round ${round}: the second event's task includes the first change`)
    t.same(answered.map((task) => task.version).sort((x, y) => x - y), [before.version + 1, before.version + 2], `round ${round}: each PATCH answered its own version`)
    t.same(answered[second], later.task, `round ${round}: the later PATCH answered the task with both changes`)

    const final = await api<Task>(instances[round % 2].baseUrl, 'GET', `/teams/${team}/tasks/${before.id}`, { token: alice })
    t.same({ [fields[0]]: final.body[fields[0]], [fields[1]]: final.body[fields[1]], version: final.body.version },
      { [fields[0]]: values[0], [fields[1]]: values[1], version: before.version + 2 }, `round ${round}: the task has both fields, version +2`)
    secondThroughEach[second]++
  }
  await Promise.all(watchers.map(pingPong))
  t.same(watchers[1].events, watchers[0].events, 'both instances delivered the same events')
  t.same(seqsOf(watchers[0].events, team), seqRange(1, seq), 'every seq once, in order')
  t.comment(`the later commit came through instance 0 in ${secondThroughEach[0]} rounds, instance 1 in ${secondThroughEach[1]}`)
})
