/**
 * What one client can make the WebSocket side do, tried as an attacker would: floods of frames,
 * refusals, replays, connections, big resumes, team ids that are Object.prototype members, and
 * a shutdown with a client that never answers. Each test fails on code without the limit.
 */
import t from 'tap'
import { Redis } from 'ioredis'
import type { Socket } from 'node:net'
import { api, connectClient, seqRange, startInstance, tokenFor, waitUntil, type Instance } from './helpers/app.js'
import { startRedis } from './helpers/redis.js'
import { neverReadingClient, pingPong, seqsOf, TestClient, upgradeRequest } from './helpers/ws-client.js'

function wsUrl (instance: Pick<Instance, 'wsUrl'>, token: string, query: Record<string, string> = {}): string {
  return `${instance.wsUrl}?${new URLSearchParams({ access_token: token, ...query }).toString()}`
}

/** Creates `count` tasks in `teamId` straight through the repository (fast, and broadcast like any mutation). */
async function fill (instance: Instance, teamId: string, count: number, description = ''): Promise<void> {
  for (let i = 0; i < count; i++) await instance.app.taskRepository.create(teamId, { title: `task ${i}`, description }, { actor: 'writer' })
}

t.test('team ids that are Object.prototype members subscribe, resume and receive like any other', async (t) => {
  const instance = await startInstance(t, { databasePath: `${t.testdir()}/atlas.db` })
  const teams = ['constructor', '__proto__', 'toString', 'hasOwnProperty']
  const token = await tokenFor('proto', teams)
  for (const teamId of teams) await fill(instance, teamId, 2)
  const client = new TestClient(wsUrl(instance, token, { teams: '' }))
  t.teardown(async () => { await client.close() })
  await client.waitForFrame('welcome')
  // Without since: each is live from its head, nothing replayed.
  client.send({ type: 'subscribe', teams })
  await client.ready(teams)
  for (const teamId of teams) {
    t.same(client.frames.find((f) => f.type === 'subscribed' && f.teamId === teamId), { type: 'subscribed', teamId, seq: 2, replayed: 0 }, `${teamId}: subscribed at its head`)
  }
  // With since given as JSON keys, `__proto__` included (JSON.parse makes it an own key).
  client.send({ type: 'unsubscribe', teams })
  await client.waitFor('four unsubscribed', () => client.frames.filter((f) => f.type === 'unsubscribed').length === 4)
  client.frames.length = 0
  client.send(`{"type":"subscribe","teams":${JSON.stringify(teams)},"since":{"__proto__":0,"constructor":1}}`)
  await client.ready(teams)
  t.same(seqsOf(client.events, '__proto__'), [1, 2], '__proto__ resumed from 0')
  t.same(seqsOf(client.events, 'constructor'), [2], 'constructor resumed from 1')
  t.same(seqsOf(client.events, 'toString'), [], 'toString had no since: no replay')
  const created = await api(instance.baseUrl, 'POST', '/teams/constructor/tasks', { token, body: { title: 'live' } })
  t.equal(created.status, 201)
  await client.waitFor('the live event of constructor', () => seqsOf(client.events, 'constructor').includes(3))
})

t.test('a fast reader resumes 600 events of ~10 KB in one connection, with a 256 KiB backlog limit', async (t) => {
  const maxBufferedBytes = 256 * 1024
  const instance = await startInstance(t, { databasePath: `${t.testdir()}/atlas.db`, realtime: { websocket: { maxBufferedBytes } } })
  await fill(instance, 'red', 600, 'd'.repeat(10_000))
  const token = await tokenFor('alice', ['red'])
  const client = await connectClient(t, instance, token, { since: { red: 0 } })
  t.same(seqsOf(client.events, 'red'), seqRange(1, 600), 'every event, in order, before subscribed')
  t.match(client.frames.find((f) => f.type === 'subscribed'), { seq: 600, replayed: 600 })
  t.equal(client.socket.readyState, client.socket.OPEN, 'never cut off')
  await fill(instance, 'red', 1)
  await client.waitFor('the live event after the replay', () => client.lastSeq('red') === 601)
})

t.test('a long replay yields: another client is answered while 20 MB are replayed', async (t) => {
  const instance = await startInstance(t, { databasePath: `${t.testdir()}/atlas.db` })
  await fill(instance, 'red', 2000, 'y'.repeat(10_000))
  const token = await tokenFor('alice', ['red'])
  const other = await connectClient(t, instance, token)
  const resuming = new TestClient(wsUrl(instance, token, { since: 'red:0' }))
  t.teardown(async () => { await resuming.close() })
  // The first replayed event has arrived: the server is replaying now (20 MB do not fit in the kernel's buffers).
  await resuming.waitFor('the first replayed event', () => resuming.events.length > 0)
  await pingPong(other)
  t.notOk(resuming.frames.some((f) => f.type === 'subscribed'), `the other client's pong came before the replay ended (${resuming.events.length} of 2000 replayed by then)`)
  await resuming.waitFor('subscribed', () => resuming.frames.some((f) => f.type === 'subscribed'), 60_000)
  t.same(seqsOf(resuming.events, 'red'), seqRange(1, 2000), 'and the replay was whole')
})

t.test('a resumer that never reads is cut off, and no stream or broker subscription outlives it', async (t) => {
  const redis = await startRedis(t)
  const instance = await startInstance(t, {
    databasePath: `${t.testdir()}/atlas.db`,
    redisUrl: redis.url,
    realtime: { websocket: { heartbeatMs: 300, closeGraceMs: 200 } }
  })
  const probe = new Redis(redis.url)
  t.teardown(() => { probe.disconnect() })
  const numsub = async (): Promise<number> => Number((await probe.pubsub('NUMSUB', 'atlas:team:red') as [string, number])[1])
  // 20 KB events: a page of them is more than maxBufferedBytes (1 MiB), as in the report.
  await fill(instance, 'red', 150, 'é'.repeat(10_000))
  const token = await tokenFor('alice', ['red'])
  const reader = await connectClient(t, instance, token)
  const stalled: Socket = await neverReadingClient(t, wsUrl(instance, token, { since: 'red:0' }))
  await waitUntil('the stalled resumer to be dropped', () => instance.app.atlasConnections.connectionCount === 1, 15_000)
  t.equal(instance.app.atlasHub.stats.subscriptions, 1, 'only the reader is subscribed')
  stalled.destroy()
  await reader.close()
  await waitUntil('the team stream to be released', () => instance.app.atlasHub.stats.teams === 0)
  await waitUntil('Redis to have no subscriber of the team', async () => await numsub() === 0)
  t.equal(await numsub(), 0, 'PUBSUB NUMSUB atlas:team:red is 0 once both left')
})

t.test('10,000 pings: a burst is answered, the rest refused with rate_limited, then 1008; others keep their events', async (t) => {
  const instance = await startInstance(t, { databasePath: `${t.testdir()}/atlas.db` })
  const token = await tokenFor('alice', ['red'])
  const witness = await connectClient(t, instance, token)
  const flooder = await connectClient(t, instance, token)
  for (let i = 0; i < 10_000; i++) flooder.send({ type: 'ping', id: i })
  const closed = await flooder.closed
  t.equal(closed.code, 1008, 'closed as a policy violation')
  const pongs = flooder.frames.filter((f) => f.type === 'pong').length
  const limited = flooder.frames.filter((f) => f.type === 'error' && f.code === 'rate_limited').length
  t.ok(pongs >= 100 && pongs < 250, `about one burst answered (${pongs} pongs)`)
  t.equal(limited, 21, 'each refused frame counted as invalid: the 21st closed it')
  await fill(instance, 'red', 3)
  await witness.waitFor('the witness gets its events', () => witness.lastSeq('red') === 3)
  const again = await connectClient(t, instance, token)
  t.equal(again.socket.readyState, again.socket.OPEN, 'the user can connect again')
})

t.test('200 subscribe frames of 100 foreign teams: refusals count as invalid, closed after 21', async (t) => {
  const instance = await startInstance(t, { databasePath: `${t.testdir()}/atlas.db`, realtime: { websocket: { frameBurst: 1000, maxFramesPerSecond: 1000 } } })
  const token = await tokenFor('alice', ['red'])
  const client = await connectClient(t, instance, token)
  const foreign = Array.from({ length: 100 }, (_, i) => `foreign-${i}`)
  for (let i = 0; i < 200; i++) client.send({ type: 'subscribe', teams: foreign })
  t.equal((await client.closed).code, 1008)
  t.equal(client.frames.filter((f) => f.type === 'error' && f.code === 'forbidden_team').length, 21, '21 error frames, not 20,000')
})

t.test('subscribe(since 0)/unsubscribe cycles spend the user\'s replay budget, then get resync replay_limited, reconnecting too', async (t) => {
  const replayBytesPerMinute = 512 * 1024
  const instance = await startInstance(t, {
    databasePath: `${t.testdir()}/atlas.db`,
    realtime: { websocket: { replayBytesPerMinute, frameBurst: 10_000, maxFramesPerSecond: 10_000 } }
  })
  await fill(instance, 'red', 500)
  const token = await tokenFor('alice', ['red'])
  const client = await connectClient(t, instance, token, { teams: [] })
  let bytes = 0
  client.socket.on('message', (data: Buffer) => { bytes += data.length })
  const cycles = 50
  let limited = 0
  for (let i = 0; i < cycles; i++) {
    client.frames.length = 0
    client.send({ type: 'subscribe', teams: ['red'], since: { red: 0 } })
    await client.ready(['red'])
    const answer = client.frames.find((f) => f.type === 'subscribed' || f.type === 'resync')
    if (answer?.type === 'resync') {
      limited++
      t.match(answer, { reason: 'replay_limited', seq: 500 }, 'told to refetch instead')
    }
    client.send({ type: 'unsubscribe', teams: ['red'] })
    await client.waitFor('unsubscribed', () => client.frames.some((f) => f.type === 'unsubscribed'))
  }
  const perReplay = bytes / (cycles - limited)
  t.ok(limited > 0, `${limited} of ${cycles} resumes refused with replay_limited`)
  t.ok(bytes < replayBytesPerMinute + 2 * perReplay, `received ${bytes} bytes in all, within the budget of ${replayBytesPerMinute} plus a replay`)
  // The budget is the user's: a new connection does not refill it.
  await client.close()
  const again = await connectClient(t, instance, token, { since: { red: 0 } })
  t.match(again.frames.find((f) => f.type === 'resync'), { reason: 'replay_limited' }, 'a reconnect is still over budget')
  t.equal(again.events.length, 0, 'and gets no replay')
})

t.test('connections per user and per instance are capped at the upgrade (429, 503 with Retry-After)', async (t) => {
  const instance = await startInstance(t, {
    databasePath: `${t.testdir()}/atlas.db`,
    realtime: { websocket: { maxConnectionsPerUser: 2, maxConnections: 3 } }
  })
  const alice = await tokenFor('alice', ['red'])
  const bob = await tokenFor('bob', ['red'])
  const first = await connectClient(t, instance, alice)
  await connectClient(t, instance, alice)
  const refused = new TestClient(wsUrl(instance, alice))
  const status = await refused.opened().then(() => 101, (err: { statusCode?: number }) => err.statusCode)
  t.equal(status, 429, 'a third socket of alice is refused')
  t.match(await upgradeRequest(wsUrl(instance, alice)), { upgraded: false, status: 429, headers: { 'retry-after': /^\d+$/ }, body: { statusCode: 429, code: 'TOO_MANY_CONNECTIONS' } }, 'with Retry-After and a code')
  await connectClient(t, instance, bob)
  t.match(await upgradeRequest(wsUrl(instance, bob)), { upgraded: false, status: 503, headers: { 'retry-after': /^\d+$/ }, body: { statusCode: 503, code: 'SERVER_FULL' } }, 'the instance is full')
  await first.close()
  await waitUntil('the closed socket to be counted out', () => instance.app.atlasConnections.connectionCount === 2)
  const later = await connectClient(t, instance, alice)
  t.equal(later.socket.readyState, later.socket.OPEN, 'a freed place is taken again')
})

t.test('Origin: the own origin, listed origins and clients without Origin are let in; other pages get 403', async (t) => {
  const instance = await startInstance(t, {
    databasePath: `${t.testdir()}/atlas.db`,
    realtime: { websocket: { allowedOrigins: ['https://app.example.com'] } }
  })
  const token = await tokenFor('alice', ['red'])
  const own = new URL(instance.baseUrl).origin
  const statusFor = async (origin?: string): Promise<number | undefined> => {
    const client = new TestClient(wsUrl(instance, token), origin === undefined ? {} : { origin })
    t.teardown(async () => { await client.close() })
    return await client.opened().then(() => 101, (err: { statusCode?: number }) => err.statusCode)
  }
  t.equal(await statusFor(), 101, 'no Origin (not a browser)')
  t.equal(await statusFor(own), 101, 'the server\'s own origin')
  t.equal(await statusFor('https://app.example.com'), 101, 'a listed origin')
  t.equal(await statusFor('https://evil.example'), 403, 'another origin')
  t.equal(await statusFor('null'), 403, 'an opaque origin')
  t.equal(await statusFor(own.replace('127.0.0.1', 'localhost')), 403, 'same port, other host')
  t.match(await upgradeRequest(wsUrl(instance, token), { origin: 'https://evil.example' }), { upgraded: false, status: 403, body: { statusCode: 403, code: 'FORBIDDEN_ORIGIN' } })
})

t.test('shutdown: a client that never answers the close frame is destroyed after shutdownGraceMs', async (t) => {
  const instance = await startInstance(t, { databasePath: `${t.testdir()}/atlas.db`, realtime: { websocket: { shutdownGraceMs: 300 } } })
  const token = await tokenFor('alice', ['red'])
  const mute = await neverReadingClient(t, wsUrl(instance, token))
  await waitUntil('the mute client to be connected', () => instance.app.atlasConnections.connectionCount === 1)
  const started = Date.now()
  await instance.close()
  const took = Date.now() - started
  t.ok(took < 10_000, `close() returned after ${took} ms, not ws's 30 s close timeout`)
  // Reading again, it finds the 1001 close frame, then the end of a connection the server destroyed.
  const gone = new Promise((resolve) => { mute.once('close', resolve) })
  mute.resume()
  await gone
  t.pass('the socket was destroyed')
})

t.test('a subscribe repeated while its replay runs hands on nothing twice', async (t) => {
  const instance = await startInstance(t, { databasePath: `${t.testdir()}/atlas.db` })
  await fill(instance, 'red', 1000, 'r'.repeat(10_000))
  const token = await tokenFor('alice', ['red'])
  const client = await connectClient(t, instance, token, { teams: [] })
  client.send({ type: 'subscribe', teams: ['red'], since: { red: 0 } })
  await client.waitFor('the first replayed event', () => client.events.length > 0)
  client.send({ type: 'subscribe', teams: ['red'], since: { red: 0 } })
  await client.ready(['red'], 60_000)
  await pingPong(client)
  t.same(seqsOf(client.events, 'red'), seqRange(1, 1000), 'every event once, in order')
  const answers = client.frames.filter((f) => f.type === 'subscribed')
  t.same(answers.map((f) => f.replayed), [1000, 0], 'each subscribe frame answered once: the replay, then the repeat (nothing replayed twice)')
  t.equal(client.frames.map((f) => f.type).lastIndexOf('task.created'), client.frames.indexOf(answers[0]) - 1, 'both answers after the last replayed event')
})
