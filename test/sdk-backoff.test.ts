import t from 'tap'
import { AtlasClient, Backoff, CloseCode, backoffDelay, type DisconnectInfo, type ReconnectInfo } from '../client/index.js'
import { startInstance, tokenFor } from './helpers/app.js'
import { nextEvent } from './helpers/sdk.js'

t.test('backoffDelay: full jitter between 0 and min(cap, base * 2^attempt)', async (t) => {
  const options = { baseMs: 100, capMs: 2000 }
  // The top of the window doubles per attempt until it reaches the cap.
  const top = (attempt: number): number => backoffDelay(attempt, options, () => 0.999999) + 1
  t.same([0, 1, 2, 3, 4, 5, 6, 10].map(top), [100, 200, 400, 800, 1600, 2000, 2000, 2000])
  // The bottom of the window is always 0: full jitter, not "half plus random".
  t.same([0, 3, 10].map((a) => backoffDelay(a, options, () => 0)), [0, 0, 0])
  t.equal(backoffDelay(3, options, () => 0.5), 400, 'the random fraction scales the window')
  // Whatever the random source says, the delay stays inside the window.
  const wild = [-1, 0, 0.3, 0.999, 1, 7]
  for (let attempt = 0; attempt < 12; attempt++) {
    for (const r of wild) {
      const delay = backoffDelay(attempt, options, () => r)
      t.ok(delay >= 0 && delay <= Math.min(2000, 100 * 2 ** attempt), `attempt ${attempt}, random ${r}: ${delay}`)
    }
  }
  // A very long outage neither overflows nor produces NaN.
  t.equal(backoffDelay(5000, options, () => 0.5), 1000)
  t.equal(backoffDelay(1e9, { baseMs: 0, capMs: 10 }, () => 0.5), 0)
})

t.test('Backoff counts attempts, is bounded by maxAttempts and resets', async (t) => {
  const randoms = [0.5, 0.5, 0.5, 0.5]
  const backoff = new Backoff({ baseMs: 10, capMs: 25, maxAttempts: 3, random: () => randoms.shift() ?? 0 })
  t.same([backoff.next(), backoff.next(), backoff.next()], [5, 10, 12])
  t.equal(backoff.next(), undefined, 'no fourth attempt')
  backoff.reset()
  t.equal(backoff.attempt, 0)
  t.equal(backoff.next(), 5, 'starts from the bottom again after a reset')
})

t.test('a client that loses its server reconnects with growing, jittered, capped delays, then gives up', async (t) => {
  const dir = t.testdir()
  const instance = await startInstance(t, { databasePath: `${dir}/atlas.db` })
  const token = await tokenFor('alice', ['red'])
  // The injected random source: each delay must be exactly its fraction of the window.
  const fractions = [0.5, 0.25, 0.9, 0.75, 0.1, 0.99]
  const drawn: number[] = []
  const random = (): number => {
    const r = fractions[drawn.length % fractions.length]
    drawn.push(r)
    return r
  }
  const client = new AtlasClient({
    baseUrl: instance.baseUrl,
    token,
    teams: ['red'],
    reconnect: { baseMs: 20, capMs: 100, maxAttempts: 6, random }
  })
  t.teardown(() => client.close())
  const states: string[] = []
  const reconnects: ReconnectInfo[] = []
  const disconnects: DisconnectInfo[] = []
  client.on('state', (s) => states.push(s))
  client.on('reconnect', (r) => reconnects.push(r))
  client.on('disconnect', (d) => disconnects.push(d))
  client.connect()
  await nextEvent(client, 'snapshot')
  t.equal(client.state, 'open')

  // The server goes away for good: it says 1001, then every reconnect is refused.
  const gaveUp = nextEvent(client, 'state', (s) => s === 'closed')
  await instance.close()
  await gaveUp

  t.equal(disconnects[0].code, CloseCode.GOING_AWAY, 'the server said it was going away')
  t.equal(reconnects.length, 6, 'bounded: exactly maxAttempts reconnects were scheduled')
  t.same(reconnects.map((r) => r.attempt), [1, 2, 3, 4, 5, 6])
  const windows = [20, 40, 80, 100, 100, 100]
  t.same(reconnects.map((r) => r.delayMs), windows.map((w, i) => Math.floor(fractions[i] * w)),
    'each delay is the injected fraction of min(cap, base * 2^attempt)')
  t.equal(drawn.length, 6, 'one random draw per delay')
  t.same(disconnects.map((d) => d.willReconnect), [true, true, true, true, true, true, false], 'the seventh failure gives up')
  t.same(states, ['connecting', 'open', 'reconnecting', 'closed'])
})

t.test('a successful reconnect starts the backoff from the bottom again', async (t) => {
  const dir = t.testdir()
  const instance = await startInstance(t, { databasePath: `${dir}/atlas.db` })
  const token = await tokenFor('alice', ['red'])
  const client = new AtlasClient({
    baseUrl: instance.baseUrl,
    token,
    teams: ['red'],
    reconnect: { baseMs: 10, capMs: 1000, random: () => 0.999 }
  })
  t.teardown(() => client.close())
  const reconnects: ReconnectInfo[] = []
  client.on('reconnect', (r) => reconnects.push(r))
  client.connect()
  await nextEvent(client, 'snapshot')
  for (let cut = 0; cut < 3; cut++) {
    const back = nextEvent(client, 'state', (s) => s === 'open')
    for (const socket of instance.app.websocketServer.clients) socket.terminate()
    await back
  }
  t.same(reconnects.map((r) => r.attempt), [1, 1, 1], 'every drop after a welcome is a first attempt')
  t.same(reconnects.map((r) => r.delayMs), [9, 9, 9])
})
