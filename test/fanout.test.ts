import t from 'tap'
import { api, connectClient, seqRange, startInstance, tokenFor } from './helpers/app.js'
import { eachBackend, testDatabase } from './helpers/backends.js'
import { pingPong, seqsOf, type TestClient } from './helpers/ws-client.js'

const CLIENTS = 50
const MUTATIONS = 100
/** HTTP requests in flight at once during the burst: enough to interleave, bounded for a 2-core box. */
const CONCURRENCY = 5

eachBackend(t, `${CLIENTS} clients of a team each get all ${MUTATIONS} events of a burst once and in order; another team gets none`, async (t, backend) => {
  const instance = await startInstance(t, await testDatabase(t, backend))
  const alice = await tokenFor('alice', ['red'])
  const carol = await tokenFor('carol', ['blue'])
  // 50 members of the team, each with their own socket (one user's sockets are capped per instance).
  const reds = await Promise.all(Array.from({ length: CLIENTS }, async (_, i) => await connectClient(t, instance, await tokenFor(`member-${i}`, ['red']))))
  const blue = await connectClient(t, instance, carol)

  // 50 creates, then an update of each: 100 mutations, CONCURRENCY at a time.
  const ids: string[] = []
  const requests = [
    ...seqRange(1, MUTATIONS / 2).map((i) => async () => {
      const response = await api(instance.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: `task ${i}` } })
      ids.push(response.body.id)
      return response.status
    }),
    ...seqRange(1, MUTATIONS / 2).map((i) => async () =>
      (await api(instance.baseUrl, 'PATCH', `/teams/red/tasks/${ids[i - 1]}`, { token: alice, body: { status: 'done' } })).status)
  ]
  const statuses: number[] = []
  for (let i = 0; i < requests.length; i += CONCURRENCY) {
    statuses.push(...await Promise.all(requests.slice(i, i + CONCURRENCY).map(async (request) => await request())))
  }
  t.same(statuses, [...Array(MUTATIONS / 2).fill(201), ...Array(MUTATIONS / 2).fill(200)])

  const allArrived = async (client: TestClient): Promise<void> => {
    await client.waitFor(`${MUTATIONS} events`, () => client.events.length >= MUTATIONS)
    await pingPong(client) // anything sent after the 100th (a duplicate) would be here by now
  }
  await Promise.all(reds.map(allArrived))
  t.same(reds.map((c) => seqsOf(c.events, 'red')), Array(CLIENTS).fill(seqRange(1, MUTATIONS)), 'every client: seq 1..100, once each, in order')
  t.same(reds.map((c) => c.events.length), Array(CLIENTS).fill(MUTATIONS), 'no event of another team')
  const stored = (await instance.app.taskRepository.eventsAfter('red', 0, 1000)).map((e) => JSON.parse(e.payload))
  t.same(reds[CLIENTS - 1].events, stored, 'what arrived is the stored event log, byte for byte in meaning')

  const blueCreated = await api(instance.baseUrl, 'POST', '/teams/blue/tasks', { token: carol, body: { title: 'blue task' } })
  t.equal(blueCreated.status, 201)
  await blue.waitFor('its own event', () => blue.events.length >= 1)
  await pingPong(blue)
  t.same(blue.events.map((e) => [e.teamId, e.seq]), [['blue', 1]], 'the blue client got only its own team\'s event')
})
