import t, { type Test } from 'tap'
import { join } from 'node:path'
import { signToken } from '../examples/jwt-auth.js'
import type { AtlasRealtimeOptions } from '../plugins/index.js'
import { api, connectClient, startInstance, tokenFor, type Instance } from './helpers/app.js'
import { TestClient, pingPong, seqsOf } from './helpers/ws-client.js'

/** The example API with tokens for alice (red) and dave (red and blue). */
async function setup (t: Test, realtime?: Partial<Omit<AtlasRealtimeOptions, 'authenticate' | 'database'>>) {
  const instance = await startInstance(t, { databasePath: join(t.testdir(), 'atlas.db'), realtime })
  const alice = await tokenFor('alice', ['red'])
  const dave = await tokenFor('dave', ['red', 'blue'])
  /** Creates a task over HTTP (proving the process still serves HTTP) and returns its event's seq. */
  const mutate = async (team: string, token = dave): Promise<number> => {
    const response = await api(instance.baseUrl, 'POST', `/teams/${team}/tasks`, { token, body: { title: `task of ${team}` } })
    if (response.status !== 201) throw new Error(`POST answered ${response.status}`)
    return await instance.app.taskRepository.headSeq(team)
  }
  return { instance, alice, dave, mutate }
}

/** Opens a socket that must be refused; returns the HTTP status of the refusal. */
async function refusedStatus (t: Test, instance: Instance, query: string): Promise<number | undefined> {
  const before = instance.app.websocketServer.clients.size
  const client = new TestClient(`${instance.wsUrl}?${query}`)
  t.teardown(async () => { await client.close() })
  const error = await client.opened().then(() => undefined, (err: { statusCode?: number }) => err)
  t.equal(instance.app.websocketServer.clients.size, before, `${query}: no socket opened`)
  return error?.statusCode
}

function errorCodes (client: TestClient): unknown[] {
  return client.frames.filter((f) => f.type === 'error').map((f) => f.code)
}

t.test('an upgrade without a valid token gets HTTP 401 and no socket', async (t) => {
  const { instance, alice } = await setup(t)
  const foreign = await signToken('some-other-secret', 'alice', ['red'])
  t.equal(await refusedStatus(t, instance, ''), 401, 'no token')
  t.equal(await refusedStatus(t, instance, 'access_token=garbage'), 401, 'garbage token')
  t.equal(await refusedStatus(t, instance, `access_token=${foreign}`), 401, 'token signed with another secret')
  t.equal(await refusedStatus(t, instance, `access_token=${alice.slice(0, -2)}xx`), 401, 'tampered signature')
  t.equal(instance.app.atlasConnections.connectionCount, 0)
})

t.test('teams= naming a team outside the principal gets HTTP 403', async (t) => {
  const { instance, alice } = await setup(t)
  t.equal(await refusedStatus(t, instance, `access_token=${alice}&teams=blue`), 403)
  t.equal(await refusedStatus(t, instance, `access_token=${alice}&teams=red,blue`), 403)
})

t.test('a malformed since or teams gets HTTP 400', async (t) => {
  const { instance, alice } = await setup(t)
  for (const query of ['since=red:abc', 'since=red', 'since=red:-1', 'since=:3', 'teams=re%20d', 'since=red:1&since=red:2']) {
    t.equal(await refusedStatus(t, instance, `access_token=${alice}&${query}`), 400, query)
  }
})

t.test('the welcome frame names user, teams, protocol, heartbeat and expiry; then one subscribed frame per team', async (t) => {
  const { instance, dave } = await setup(t)
  const client = await connectClient(t, instance, dave)
  const expiresAt = client.frames[0]?.expiresAt
  t.ok(typeof expiresAt === 'number' && expiresAt > Date.now(), 'the token\'s exp, in ms')
  t.same(client.frames, [
    { type: 'welcome', protocol: 1, userId: 'dave', teams: ['red', 'blue'], heartbeatMs: 30_000, expiresAt },
    { type: 'subscribed', teamId: 'red', seq: 0, replayed: 0 },
    { type: 'subscribed', teamId: 'blue', seq: 0, replayed: 0 }
  ])
})

t.test('teams= narrows the subscription to the teams named', async (t) => {
  const { instance, dave, mutate } = await setup(t)
  const client = await connectClient(t, instance, dave, { teams: ['blue'] })
  await mutate('red')
  await mutate('blue')
  await client.waitFor('the blue event', () => client.events.length === 1)
  await pingPong(client)
  t.same(client.events.map((e) => [e.teamId, e.seq]), [['blue', 1]])
  t.same(client.frames.filter((f) => f.type === 'subscribed').map((f) => f.teamId), ['blue'])
})

t.test('junk from one client gets an error or a close, while another client keeps receiving and HTTP keeps serving', async (t) => {
  const { instance, alice, mutate } = await setup(t)
  const witness = await connectClient(t, instance, alice)
  const cases: Array<{ name: string, send: (c: TestClient) => void, errors?: string[], closeCode?: number }> = [
    { name: 'invalid JSON', send: (c) => c.send('{"type":'), errors: ['invalid_json'] },
    { name: 'a JSON array', send: (c) => c.send('[{"type":"ping"}]'), errors: ['invalid_frame'] },
    { name: 'a JSON string', send: (c) => c.send('"ping"'), errors: ['invalid_frame'] },
    { name: 'an unknown type', send: (c) => c.send({ type: 'dance' }), errors: ['unknown_type'] },
    { name: 'a prototype key as type', send: (c) => c.send({ type: 'constructor' }), errors: ['unknown_type'] },
    { name: 'a valid type with extra fields', send: (c) => c.send({ type: 'ping', id: 1, extra: true }), errors: ['invalid_frame'] },
    { name: 'a subscribe without teams', send: (c) => c.send({ type: 'subscribe' }), errors: ['invalid_frame'] },
    { name: 'a binary frame', send: (c) => c.socket.send(Buffer.from('{"type":"ping"}'), { binary: true }), errors: ['binary_unsupported'] },
    { name: 'a frame over the 64 KiB maxPayload', send: (c) => c.send('x'.repeat(64 * 1024 + 1)), closeCode: 1009 },
    { name: '21 invalid frames', send: (c) => { for (let i = 0; i < 21; i++) c.send('nope') }, errors: Array(21).fill('invalid_json'), closeCode: 1008 }
  ]
  for (const { name, send, errors = [], closeCode } of cases) {
    const junk = await connectClient(t, instance, alice)
    send(junk)
    if (closeCode !== undefined) {
      t.equal((await junk.closed).code, closeCode, `${name}: closed with ${closeCode}`)
    } else {
      await junk.waitFor(`${name}: error frame`, () => errorCodes(junk).length === errors.length)
    }
    t.same(errorCodes(junk), errors, `${name}: error frames`)
    const seq = await mutate('red', alice)
    await witness.waitFor(`${name}: witness gets seq ${seq}`, () => witness.lastSeq('red') === seq)
    if (closeCode === undefined) {
      await junk.waitFor(`${name}: the sender itself is still subscribed`, () => junk.lastSeq('red') === seq)
      t.equal(junk.frames.some((f) => f.type === 'pong'), false, `${name}: not acted upon`)
    }
  }
  t.same(seqsOf(witness.events, 'red'), Array.from({ length: cases.length }, (_, i) => i + 1), 'the witness got every event once, in order')
  t.same(errorCodes(witness), [])
})

t.test('a ping frame gets a pong with the same id', async (t) => {
  const { instance, alice } = await setup(t)
  const client = await connectClient(t, instance, alice)
  client.send({ type: 'ping', id: 'abc-1' })
  client.send({ type: 'ping', id: 42 })
  client.send({ type: 'ping' })
  await client.waitFor('three pongs', () => client.frames.filter((f) => f.type === 'pong').length === 3)
  t.same(client.frames.filter((f) => f.type === 'pong'), [{ type: 'pong', id: 'abc-1' }, { type: 'pong', id: 42 }, { type: 'pong' }])
})

t.test('subscribe and unsubscribe frames change which teams a socket receives', async (t) => {
  const { instance, dave, mutate } = await setup(t)
  const client = await connectClient(t, instance, dave, { teams: ['red'] })
  await mutate('red')
  await mutate('blue')
  client.send({ type: 'subscribe', teams: ['blue'] })
  await client.ready(['blue'])
  t.match(client.frames.find((f) => f.type === 'subscribed' && f.teamId === 'blue'), { seq: 1, replayed: 0 })
  await mutate('blue')
  await client.waitFor('blue seq 2', () => client.lastSeq('blue') === 2)

  client.send({ type: 'unsubscribe', teams: ['red'] })
  await client.waitForFrame('unsubscribed')
  await mutate('red')
  await pingPong(client)
  t.same(seqsOf(client.events, 'red'), [1], 'nothing of red after unsubscribing')
  t.same(seqsOf(client.events, 'blue'), [2], 'blue only from the subscription on')

  client.send({ type: 'subscribe', teams: ['red'], since: { red: 1 } })
  await client.waitFor('red replayed from seq 1', () => client.lastSeq('red') === 2)
  await mutate('red')
  await client.waitFor('red seq 3 live', () => client.lastSeq('red') === 3)
  t.same(seqsOf(client.events, 'red'), [1, 2, 3], 'a resubscribe with since replays what was missed, then goes live')
})

t.test('a subscribe for a foreign team gets a forbidden_team error frame and nothing of that team', async (t) => {
  const { instance, alice, mutate } = await setup(t)
  const client = await connectClient(t, instance, alice)
  client.send({ type: 'subscribe', teams: ['blue'] })
  await client.waitFor('an error frame', () => errorCodes(client).length === 1)
  t.match(client.frames.find((f) => f.type === 'error'), { code: 'forbidden_team', message: /blue/ })
  await mutate('blue')
  await mutate('red', alice)
  await client.waitFor('the red event', () => client.lastSeq('red') === 1)
  await pingPong(client)
  t.same(client.events.map((e) => e.teamId), ['red'])
})

t.test('heartbeat: a client that stops answering protocol pings is dropped, a normal one stays', async (t) => {
  const { instance, alice, mutate } = await setup(t, { websocket: { heartbeatMs: 200 } })
  const normal = await connectClient(t, instance, alice)
  let normalPings = 0
  const threePings = new Promise<void>((resolve) => {
    normal.socket.on('ping', () => { if (++normalPings === 3) resolve() })
  })
  const silent = new TestClient(`${instance.wsUrl}?access_token=${alice}`, { autoPong: false })
  t.teardown(async () => { await silent.close() })
  let silentPings = 0
  silent.socket.on('ping', () => { silentPings++ })
  await silent.waitForFrame('welcome')
  t.equal(instance.app.atlasConnections.connectionCount, 2)

  const { code } = await silent.closed
  t.equal(code, 1006, 'the silent client was terminated (no close frame)')
  t.ok(silentPings >= 1, 'it had been pinged')
  await threePings
  t.equal(normal.socket.readyState, normal.socket.OPEN, 'the answering client survived three heartbeat rounds')
  await mutate('red', alice)
  await normal.waitFor('an event', () => normal.lastSeq('red') === 1)
  t.equal(instance.app.atlasConnections.connectionCount, 1)
})
