import t, { type Test } from 'tap'
import { api, connectClient, seqRange, startInstance, tokenFor, type Instance } from './helpers/app.js'
import { eachBackend, testDatabase, type Backend } from './helpers/backends.js'
import { startRedis } from './helpers/redis.js'
import { seqsOf, type TestClient } from './helpers/ws-client.js'

/** Two instances of the example API sharing one private redis-server and one database. */
async function setup (t: Test, backend: Backend) {
  const redis = await startRedis(t)
  const database = await testDatabase(t, backend)
  const instances = [
    await startInstance(t, { ...database, redisUrl: redis.url }),
    await startInstance(t, { ...database, redisUrl: redis.url })
  ]
  const alice = await tokenFor('alice', ['red'])
  const carol = await tokenFor('carol', ['blue'])
  const create = async (instance: Instance, team: 'red' | 'blue'): Promise<void> => {
    const response = await api(instance.baseUrl, 'POST', `/teams/${team}/tasks`, { token: team === 'red' ? alice : carol, body: { title: `${team} task` } })
    if (response.status !== 201) throw new Error(`POST answered ${response.status}`)
  }
  return { instances, alice, carol, create }
}

async function allReach (clients: TestClient[], team: string, seq: number): Promise<void> {
  await Promise.all(clients.map(async (c) => { await c.waitFor(`${team} seq ${seq}`, () => c.lastSeq(team) >= seq) }))
}

eachBackend(t, 'a mutation on one instance reaches a client on the other, both ways', async (t, backend) => {
  const { instances: [one, two], alice, create } = await setup(t, backend)
  const onOne = await connectClient(t, one, alice)
  const onTwo = await connectClient(t, two, alice)
  await create(one, 'red')
  await allReach([onOne, onTwo], 'red', 1)
  await create(two, 'red')
  await allReach([onOne, onTwo], 'red', 2)
  t.same(seqsOf(onOne.events, 'red'), [1, 2])
  t.same(seqsOf(onTwo.events, 'red'), [1, 2])
  t.same(onOne.events, onTwo.events, 'both got the same events')
})

eachBackend(t, 'with mutations interleaved across both instances, clients on both get the same seq run, once each', async (t, backend) => {
  const { instances: [one, two], alice, create } = await setup(t, backend)
  const clients = [
    await connectClient(t, one, alice), await connectClient(t, one, alice),
    await connectClient(t, two, alice), await connectClient(t, two, alice)
  ]
  const ROUNDS = 15
  for (let i = 0; i < ROUNDS; i++) await Promise.all([create(one, 'red'), create(two, 'red')])
  // One more through each instance, in turn: every earlier message of either publisher (a
  // duplicate included) reaches each client before these.
  await create(one, 'red')
  await create(two, 'red')
  const total = 2 * ROUNDS + 2
  await allReach(clients, 'red', total)
  t.same(clients.map((c) => seqsOf(c.events, 'red')), Array(clients.length).fill(seqRange(1, total)))
  t.same(clients.map((c) => c.events), Array(clients.length).fill(clients[0].events), 'identical events everywhere')
  const stored = (await one.app.taskRepository.eventsAfter('red', 0, 1000)).map((e) => JSON.parse(e.payload))
  t.same(clients[0].events, stored, 'they are the shared event log')
  t.same((await two.app.taskRepository.list('red')).seq, total)
})

eachBackend(t, "neither instance delivers one team's events to another team's client", async (t, backend) => {
  const { instances: [one, two], alice, carol, create } = await setup(t, backend)
  const reds = [await connectClient(t, one, alice), await connectClient(t, two, alice)]
  const blues = [await connectClient(t, one, carol), await connectClient(t, two, carol)]
  for (let i = 0; i < 3; i++) {
    await create(one, 'red')
    await create(two, 'red')
  }
  // Every red event has been handed out on both instances before the blue ones are made, so a
  // misrouted red event would reach a blue socket before that socket's own blue events.
  await allReach(reds, 'red', 6)
  await create(one, 'blue')
  await create(two, 'blue')
  // And the same the other way round: each publisher's red event after its blue one.
  await create(one, 'red')
  await create(two, 'red')
  await allReach(blues, 'blue', 2)
  await allReach(reds, 'red', 8)
  t.same(blues.map((c) => c.events.map((e) => [e.teamId, e.seq])), Array(2).fill([['blue', 1], ['blue', 2]]))
  t.same(reds.map((c) => c.events.map((e) => [e.teamId, e.seq])), Array(2).fill(seqRange(1, 8).map((seq) => ['red', seq])))
})
