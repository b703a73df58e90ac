import t, { type Test } from 'tap'
import Fastify from 'fastify'
import { join } from 'node:path'
import { atlasRealtime, type AtlasRealtimeOptions } from '../plugins/index.js'
import type { Task } from '../protocol/schemas.js'
import { api, connectClient, listenInstance, startInstance, tokenFor, waitUntil, type ApiResponse, type Instance } from './helpers/app.js'
import { startRedis } from './helpers/redis.js'
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { TestClient } from './helpers/ws-client.js'

const SECOND = 1000

function expectRateHeaders (t: Test, response: ApiResponse, limit: number): void {
  t.equal(response.headers.get('x-ratelimit-limit'), String(limit))
  t.equal(response.headers.get('x-ratelimit-remaining'), '0')
  const retryAfter = Number(response.headers.get('retry-after'))
  t.ok(retryAfter >= 1 && retryAfter <= 60, `retry-after ${retryAfter} s`)
  t.equal(response.headers.get('x-ratelimit-reset'), String(retryAfter))
}

t.test('mutations per user: 429 RATE_LIMITED with the standard headers past the limit, nothing stored, others unaffected', async (t) => {
  const instance = await startInstance(t, { databasePath: join(t.testdir(), 'atlas.db'), realtime: { routes: { maxMutationsPerUser: 5 } } })
  const alice = await tokenFor('alice', ['red'])
  const bob = await tokenFor('bob', ['red'])
  const watcher = await connectClient(t, instance, bob, { teams: ['red'] })
  const post = async (token: string, body: unknown = { title: 'x' }): Promise<ApiResponse> => await api(instance.baseUrl, 'POST', '/teams/red/tasks', { token, body })

  // Refused requests (invalid body, foreign team) are not counted: the limit is on changes made.
  for (let i = 0; i < 10; i++) t.equal((await post(alice, { title: 5 })).status, 400)
  t.equal((await api(instance.baseUrl, 'POST', '/teams/blue/tasks', { token: alice, body: { title: 'x' } })).status, 403)

  const made: Task[] = []
  for (let i = 0; i < 3; i++) {
    const response = await post(alice)
    t.equal(response.status, 201)
    t.equal(response.headers.get('x-ratelimit-remaining'), String(4 - i), 'each answer says how many are left')
    made.push(response.body)
  }
  t.equal((await api(instance.baseUrl, 'PATCH', `/teams/red/tasks/${made[0].id}`, { token: alice, body: { title: 'y' } })).status, 200)
  t.equal((await api(instance.baseUrl, 'DELETE', `/teams/red/tasks/${made[1].id}`, { token: alice })).status, 204)
  await watcher.waitFor('5 events', () => watcher.events.length === 5)
  const before = await instance.app.taskRepository.list('red')

  const refused = [
    await post(alice),
    await api(instance.baseUrl, 'PATCH', `/teams/red/tasks/${made[0].id}`, { token: alice, body: { title: 'z' } }),
    await api(instance.baseUrl, 'DELETE', `/teams/red/tasks/${made[2].id}`, { token: alice })
  ]
  for (const response of refused) {
    t.equal(response.status, 429)
    t.match(response.body, { statusCode: 429, code: 'RATE_LIMITED', error: 'Too Many Requests', message: /at most 5 per 60 s; retry in \d+ s/ })
    expectRateHeaders(t, response, 5)
  }
  t.same(await instance.app.taskRepository.list('red'), before, 'nothing stored')
  t.equal((await api(instance.baseUrl, 'GET', '/teams/red/tasks', { token: alice })).status, 200, 'reads are not limited')

  // Another user is not affected; its event is the next one, so no refused request made one.
  t.equal((await post(bob)).status, 201)
  await watcher.waitFor('the 6th event', () => watcher.events.length === 6)
  t.equal(watcher.events[5].actor, 'bob')
})

t.test('mutations per user: the limit lifts when its window has passed', async (t) => {
  const instance = await startInstance(t, { databasePath: join(t.testdir(), 'atlas.db'), realtime: { routes: { maxMutationsPerUser: 2, mutationWindowMs: SECOND } } })
  const alice = await tokenFor('alice', ['red'])
  const post = async (): Promise<number> => (await api(instance.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 'x' } })).status
  t.same([await post(), await post(), await post()], [201, 201, 429])
  const started = Date.now()
  await waitUntil('the window to pass', async () => await post() === 201, 5 * SECOND, 100)
  t.ok(Date.now() - started < 2 * SECOND, 'within about one window')
})

/** A suite whose authenticate accepts `Bearer good-<user>` and counts its calls. */
async function countingApp (t: Test, extra: Partial<AtlasRealtimeOptions> = {}, databasePath = join(t.testdir(), 'atlas.db')): Promise<Instance & { calls: () => number }> {
  let calls = 0
  const app = Fastify()
  await app.register(atlasRealtime, {
    ...extra,
    database: { databasePath },
    authenticate: (request) => {
      calls++
      const match = /^Bearer good-(\w+)$/.exec(request.headers.authorization ?? '')
      return match === null ? null : { userId: match[1], teams: ['red'] }
    }
  })
  const instance = await listenInstance(t, app)
  return { ...instance, calls: () => calls }
}

async function upgradeStatus (wsUrl: string, authorization: string): Promise<number | undefined> {
  const client = new TestClient(wsUrl, { headers: { authorization } })
  try {
    return await client.opened().then(() => 101, (err: { statusCode?: number }) => err.statusCode)
  } finally {
    await client.close()
  }
}

t.test('failed authentications per IP: past the limit, 429 before authenticate runs, HTTP and upgrade, until the window passes', async (t) => {
  const instance = await countingApp(t, { auth: { maxFailedAuthPerIp: 3, failedAuthWindowMs: 2 * SECOND } })
  const list = async (authorization: string): Promise<ApiResponse> => await api(instance.baseUrl, 'GET', '/teams/red/tasks', { headers: { authorization } })
  t.equal((await list('Bearer good-alice')).status, 200, 'successes are not counted')
  for (let i = 0; i < 3; i++) t.equal((await list(`Bearer guess-${i}`)).status, 401)
  t.equal(await upgradeStatus(instance.wsUrl, 'Bearer good-alice'), 101, 'still allowed at the limit')

  const blocked = await list('Bearer guess-3')
  t.equal(blocked.status, 429, 'the failure past the limit is answered 429')
  t.match(blocked.body, { statusCode: 429, code: 'AUTH_RATE_LIMITED', error: 'Too Many Requests' })
  expectRateHeaders(t, blocked, 3)

  const calls = instance.calls()
  const withGood = await list('Bearer good-alice')
  t.equal(withGood.status, 429, 'then even a valid credential is refused...')
  t.equal(await upgradeStatus(instance.wsUrl, 'Bearer good-alice'), 429, '...on the upgrade too')
  t.equal((await api(instance.baseUrl, 'POST', '/teams/red/tasks', { headers: { authorization: 'Bearer good-alice' }, body: { title: 'x' } })).status, 429)
  t.equal(instance.calls(), calls, '...without running authenticate: a guesser learns nothing more')
  expectRateHeaders(t, withGood, 3)

  await waitUntil('the block to end', async () => (await list('Bearer good-alice')).status === 200, 5 * SECOND, 100)
  t.equal((await list('Bearer guess-again')).status, 401, 'a new window starts from zero')
})

t.test('limit options are checked at registration', async (t) => {
  const cases: Array<[Partial<AtlasRealtimeOptions>, RegExp]> = [
    [{ routes: { maxMutationsPerUser: -1 } }, /^atlas-task-routes: option maxMutationsPerUser must be a non-negative integer/],
    [{ routes: { mutationWindowMs: 0 } }, /^atlas-task-routes: option mutationWindowMs must be a positive integer/],
    [{ routes: { rateLimitRedis: 5 as unknown as string } }, /^atlas-task-routes: option rateLimitRedis must be a Redis URL or ioredis options/],
    [{ auth: { maxFailedAuthPerIp: 1.5 } }, /^atlas-auth: option maxFailedAuthPerIp must be a non-negative integer/],
    [{ auth: { failedAuthWindowMs: -5 } }, /^atlas-auth: option failedAuthWindowMs must be a positive integer/]
  ]
  for (const [options, message] of cases) {
    const app = Fastify()
    t.teardown(async () => { await app.close() })
    await t.rejects(async () => {
      await app.register(atlasRealtime, { authenticate: () => null, database: { databasePath: join(t.testdir(), 'atlas.db') }, ...options })
    }, { message }, JSON.stringify(options))
  }
  // 0 turns a limit off.
  const instance = await countingApp(t, { auth: { maxFailedAuthPerIp: 0 }, routes: { maxMutationsPerUser: 0 } })
  for (let i = 0; i < 5; i++) t.equal((await api(instance.baseUrl, 'GET', '/teams/red/tasks', { headers: { authorization: 'Bearer bad' } })).status, 401)
  const response = await api(instance.baseUrl, 'POST', '/teams/red/tasks', { headers: { authorization: 'Bearer good-alice' }, body: { title: 'x' } })
  t.equal(response.status, 201)
  t.equal(response.headers.get('x-ratelimit-limit'), null)
})

t.test('with Redis, both limits hold across two instances; Redis down never fails nor delays a mutation', async (t) => {
  const redis = await startRedis(t)
  const databasePath = join(t.testdir(), 'atlas.db')
  const options = { broker: { redis: redis.url }, routes: { maxMutationsPerUser: 4 }, auth: { maxFailedAuthPerIp: 3, failedAuthWindowMs: 1500 } }
  const [one, two] = [await countingApp(t, options, databasePath), await countingApp(t, options, databasePath)]
  const post = async (instance: Instance, user = 'alice'): Promise<ApiResponse> =>
    await api(instance.baseUrl, 'POST', '/teams/red/tasks', { headers: { authorization: `Bearer good-${user}` }, body: { title: 'x' } })
  const list = async (instance: Instance, authorization: string): Promise<number> =>
    (await api(instance.baseUrl, 'GET', '/teams/red/tasks', { headers: { authorization } })).status

  // Mutations are counted written-behind: each instance learns the others' counts at its next
  // flush (100 ms). Both instances reporting alice's shared count of 4 is the event to wait for.
  const learned = new Promise<void>((resolve) => {
    const reporters = new Set<unknown>()
    const onSynced = (message: unknown): void => {
      const { counters, key, current } = message as { counters: unknown, key: string, current: number }
      if (key !== 'alice' || current < 4) return
      reporters.add(counters)
      if (reporters.size < 2) return
      unsubscribe('atlas:rate-limit:synced', onSynced)
      resolve()
    }
    subscribe('atlas:rate-limit:synced', onSynced)
  })
  t.same([(await post(one)).status, (await post(two)).status, (await post(one)).status, (await post(two)).status], [201, 201, 201, 201])
  await learned
  const overOne = await post(one)
  const overTwo = await post(two)
  t.same([overOne.status, overTwo.status], [429, 429], 'the 5th and 6th mutations, on either instance, are refused')
  t.equal(overTwo.body.code, 'RATE_LIMITED')
  t.equal((await post(two, 'bob')).status, 201)

  t.same([await list(one, 'Bearer x1'), await list(two, 'Bearer x2'), await list(one, 'Bearer x3')], [401, 401, 401])
  t.equal(await list(two, 'Bearer x4'), 429, 'the 4th failure, on the other instance, is refused')
  t.equal(await list(two, 'Bearer good-alice'), 429, 'and that instance now refuses the address before authenticating')
  t.equal(await list(one, 'Bearer x5'), 429, 'the first instance counts the same failures')
  for (const instance of [one, two]) {
    await waitUntil('the address to be let in again', async () => await list(instance, 'Bearer good-alice') === 200, 5 * SECOND, 100)
  }

  // Redis gone: every mutation goes through at once (each instance counts only its own).
  await redis.kill()
  for (const instance of [one, two]) {
    for (let i = 0; i < 3; i++) {
      const started = performance.now()
      const response = await post(instance, 'carol')
      const ms = performance.now() - started
      t.equal(response.status, 201, 'a mutation succeeds with Redis down')
      t.ok(ms < 200, `and quickly (${ms.toFixed(1)} ms)`)
    }
  }
  for (let i = 0; i < 5; i++) {
    const started = performance.now()
    t.equal(await list(one, `Bearer down-${i}`), 401, 'a failed authentication is answered 401 at once, uncounted')
    t.ok(performance.now() - started < 200)
  }

  // Back: counting resumes (from zero: the counters lived in the Redis that was killed).
  await redis.restart()
  await waitUntil('the limit to be counted again', async () => (await post(one, 'dave')).headers.get('x-ratelimit-remaining') === '3', 10 * SECOND, 100)
})
