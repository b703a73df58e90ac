/**
 * Issue #14, point 4: the example's operations page. Each instance samples its own figures
 * every second (atlasOps) and shares them on the broker's stats channel, so any instance can
 * show the whole deployment; the page (GET /ops) charts them per instance, from GET /ops/stats,
 * behind the admin token.
 */
import t, { type Test } from 'tap'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import Fastify, { type FastifyInstance } from 'fastify'
import { api, connectClient, startInstance, tokenFor, waitUntil, type Instance } from './helpers/app.js'
import { startRedis } from './helpers/redis.js'
import { launchBrowser } from './helpers/browser.js'
import { MemoryBroker, MemoryBus } from '../lib/memory-broker.js'
import { atlasRealtime } from '../plugins/index.js'
import { atlasOps, type OpsStats } from '../plugins/ops.js'

const ADMIN_TOKEN = 'ops-test-admin-token-0123456789'
/** Where the screenshot goes (test-artifacts/ is gitignored; CI may keep it). */
const SCREENSHOT = fileURLToPath(new URL('../test-artifacts/ops-page.png', import.meta.url))

const SAMPLE_KEYS = ['ageMs', 'brokerConnected', 'committedPerSecond', 'connections', 'deliveredPerSecond', 'instance', 'intervalMs', 'lagP50Ms', 'lagP99Ms', 'outboxUnpublished', 'self', 'subscriptions']

/** The shape GET /ops/stats answers, exactly: no more keys, the right types. */
function checkShape (t: Test, stats: OpsStats): void {
  t.same(Object.keys(stats).sort(), ['instances', 'intervalMs', 'self'])
  t.type(stats.self, 'string')
  t.equal(stats.intervalMs, 1000)
  t.equal(stats.instances[0].instance, stats.self, 'the answering instance first')
  for (const sample of stats.instances) {
    t.same(Object.keys(sample).sort(), SAMPLE_KEYS)
    t.match(sample, {
      instance: String,
      intervalMs: Number,
      connections: Number,
      subscriptions: Number,
      committedPerSecond: Number,
      deliveredPerSecond: Number,
      outboxUnpublished: Number,
      brokerConnected: Boolean,
      self: Boolean,
      ageMs: Number
    })
    for (const lag of [sample.lagP50Ms, sample.lagP99Ms]) t.ok(lag === null || typeof lag === 'number', 'a lag is ms or null')
  }
}

/** Creates a task on `instance` every `everyMs` until stopped; resolves to how many it made. */
function startWriter (instance: Instance, token: string, everyMs = 50): { stop: () => Promise<number> } {
  let running = true
  let made = 0
  const loop = (async () => {
    while (running) {
      const response = await api(instance.baseUrl, 'POST', '/teams/red/tasks', { token, body: { title: `load ${made}` } })
      if (response.status !== 201) throw new Error(`the writer's POST answered ${response.status}: ${JSON.stringify(response.body)}`)
      made++
      await new Promise((resolve) => setTimeout(resolve, everyMs))
    }
  })()
  return { stop: async () => { running = false; await loop; return made } }
}

t.test('the operations page shows every instance\'s figures live over Redis, behind the admin token', async (t) => {
  const redis = await startRedis(t)
  const databasePath = join(t.testdir(), 'atlas.db')
  const config = { databasePath, redisUrl: redis.url, adminToken: ADMIN_TOKEN, realtime: { routes: { maxMutationsPerUser: 100_000 } } }
  const one = await startInstance(t, config)
  const two = await startInstance(t, config)

  await t.test('the data endpoint refuses without the admin token', async (t) => {
    for (const [what, headers] of [
      ['no credential', {}],
      ['a wrong token', { authorization: 'Bearer not-the-admin-token' }],
      ['the token without Bearer', { authorization: ADMIN_TOKEN }],
      ['a user\'s JWT', { authorization: `Bearer ${await tokenFor('alice', ['red'])}` }]
    ] as const) {
      const response = await api(two.baseUrl, 'GET', '/ops/stats', { headers })
      t.equal(response.status, 401, what)
      t.equal(response.headers.get('www-authenticate'), 'Bearer realm="atlas-admin"', what)
      t.equal(response.body.code, 'UNAUTHORIZED', what)
      t.notOk(JSON.stringify(response.body).includes('connections'), `${what}: no figure in the refusal`)
    }
    // The page itself holds no figures: anyone may load it, it asks for the token.
    const page = await fetch(`${two.baseUrl}/ops`)
    t.equal(page.status, 200)
    t.match(page.headers.get('content-type'), /^text\/html/)
  })

  const alice = await tokenFor('alice', ['red'])
  // Sockets: two on the first instance, three on the second.
  for (let i = 0; i < 2; i++) await connectClient(t, one, alice)
  for (let i = 0; i < 3; i++) await connectClient(t, two, alice)

  await t.test('GET /ops/stats lists both instances, with the admin token', async (t) => {
    let stats: OpsStats | undefined
    let cacheControl: string | null = null
    await waitUntil('both instances in the second one\'s stats, with their sockets', async () => {
      const response = await api<OpsStats>(two.baseUrl, 'GET', '/ops/stats', { token: ADMIN_TOKEN })
      if (response.status !== 200) throw new Error(`GET /ops/stats answered ${response.status}`)
      cacheControl = response.headers.get('cache-control')
      stats = response.body
      const byId = new Map(stats.instances.map((s) => [s.instance, s]))
      return byId.get(one.app.atlasBroker.instanceId)?.connections === 2 && byId.get(two.app.atlasBroker.instanceId)?.connections === 3
    }, 15_000, 200)
    if (stats === undefined) throw new Error('no stats')
    t.equal(cacheControl, 'no-store')
    checkShape(t, stats)
    t.equal(stats.self, two.app.atlasBroker.instanceId)
    t.same(stats.instances.map((s) => s.self), [true, false])
    t.same(stats.instances.map((s) => s.brokerConnected), [true, true])
  })

  const writer = startWriter(one, alice)
  t.teardown(async () => { await writer.stop() })

  await t.test('the page, loaded from the other instance while load runs, shows both instances\' figures moving', async (t) => {
    const browser = await launchBrowser(t)
    const context = await browser.newContext({ viewport: { width: 1280, height: 1000 } })
    t.teardown(async () => { await context.close() })
    const page = await context.newPage()
    const errors: string[] = []
    page.on('pageerror', (err) => errors.push(err.message))
    await page.goto(`${two.baseUrl}/ops`)

    // It asks for the token; a wrong one is refused by the server and said so.
    await page.locator('#sign-in').waitFor()
    await page.fill('#token-input', 'a-wrong-admin-token')
    await page.click('#token-form button[type=submit]')
    await page.locator('#sign-in-error', { hasText: 'not accepted' }).waitFor()
    t.ok(await page.locator('#dashboard').isHidden(), 'no figures with a wrong token')

    await page.fill('#token-input', ADMIN_TOKEN)
    await page.click('#token-form button[type=submit]')
    await page.locator('#feed[data-state="live"]').waitFor()

    const ids = { one: one.app.atlasBroker.instanceId, two: two.app.atlasBroker.instanceId }
    const cell = (instance: string, field: string): string => `tr[data-instance="${instance}"] td[data-field="${field}"]`
    // Events per second above zero on both (the second one's come over Redis), the sockets
    // counted per instance, and the charts drawn.
    await page.waitForFunction(({ ids, cells }) => {
      const value = (selector: string): string | undefined => (document.querySelector(selector) as HTMLElement | null)?.dataset.value
      const n = (selector: string): number => Number(value(selector) ?? NaN)
      return document.querySelectorAll('#instance-rows tr').length === 2 &&
        n(cells.oneDelivered) > 0 && n(cells.twoDelivered) > 0 && n(cells.oneCommitted) > 0 &&
        n(cells.oneConnections) === 2 && n(cells.twoConnections) === 3 &&
        value(cells.oneBroker) === 'up' && value(cells.twoBroker) === 'up' &&
        n(cells.oneP99) >= 0 && n(cells.twoP99) >= 0 && value(cells.oneP99) !== '' && value(cells.twoP99) !== '' &&
        document.querySelectorAll('#charts .uplot canvas').length === 5
    }, {
      ids,
      cells: {
        oneDelivered: cell(ids.one, 'delivered'),
        twoDelivered: cell(ids.two, 'delivered'),
        oneCommitted: cell(ids.one, 'committed'),
        oneConnections: cell(ids.one, 'connections'),
        twoConnections: cell(ids.two, 'connections'),
        oneBroker: cell(ids.one, 'broker'),
        twoBroker: cell(ids.two, 'broker'),
        oneP99: cell(ids.one, 'lagP99'),
        twoP99: cell(ids.two, 'lagP99')
      }
    }, { timeout: 20_000 })

    // A few seconds of history on the charts before the picture is taken.
    const first = await page.locator('#updated').textContent()
    await page.waitForFunction((before) => document.querySelector('#updated')?.textContent !== before, first, { timeout: 5000 })
    await page.waitForTimeout(3000)
    t.ok(await page.locator('#instance-rows tr').count() === 2, 'both instances listed')
    mkdirSync(join(SCREENSHOT, '..'), { recursive: true })
    await page.screenshot({ path: SCREENSHOT, fullPage: true })
    t.comment(`screenshot: ${SCREENSHOT}`)
    t.same(errors, [], 'no error on the page')
  })

  const made = await writer.stop()
  t.ok(made > 0, `the writer made ${made} tasks`)
})

/** An app of the suite alone on an in-process bus, sampling every 50 ms, forgetting after 400 ms. */
async function opsApp (t: Test, bus: MemoryBus, instanceId: string, maxInstances = 64): Promise<FastifyInstance> {
  const app = Fastify()
  t.teardown(async () => { await app.close() })
  await app.register(atlasRealtime, {
    authenticate: () => ({ userId: 'alice', teams: ['red'] }),
    database: { databasePath: join(t.testdir(), 'atlas.db') },
    broker: { memoryBus: bus, instanceId }
  })
  await app.register(atlasOps, { intervalMs: 50, expireMs: 400, maxInstances })
  await app.ready()
  return app
}

t.test('stats on the in-process broker: samples reach the other brokers of the bus, never their sender', async (t) => {
  const bus = new MemoryBus()
  const a = new MemoryBroker({ bus, instanceId: 'a' })
  const b = new MemoryBroker({ bus, instanceId: 'b' })
  const elsewhere = new MemoryBroker({ instanceId: 'c' })
  const heard: Record<string, Array<[string, string]>> = { a: [], b: [], c: [] }
  a.watchStats((sample, origin) => heard.a.push([sample, origin]))
  b.watchStats((sample, origin) => heard.b.push([sample, origin]))
  elsewhere.watchStats((sample, origin) => heard.c.push([sample, origin]))
  a.publishStats('{"x":1}')
  b.publishStats('{"x":2}')
  await new Promise((resolve) => setTimeout(resolve, 0))
  t.same(heard, { a: [['{"x":2}', 'b']], b: [['{"x":1}', 'a']], c: [] })
  // Signals and stats do not mix.
  const signals: string[] = []
  b.watchSignals({ onSignal: (topic) => signals.push(topic), onResubscribed: () => {} })
  await a.signal('revocations')
  await new Promise((resolve) => setTimeout(resolve, 0))
  t.same(signals, ['revocations'])
  t.equal(heard.b.length, 1, 'a signal is no sample')
  await b.close()
  a.publishStats('{"x":3}')
  await new Promise((resolve) => setTimeout(resolve, 0))
  t.equal(heard.b.length, 1, 'a closed broker hears nothing more')
  await a.close()
  await elsewhere.close()
})

t.test('atlasOps on the in-process broker: each instance lists every instance\'s figures, checks what arrives, forgets the silent', async (t) => {
  const bus = new MemoryBus()
  const a = await opsApp(t, bus, 'instance-a')
  const b = await opsApp(t, bus, 'instance-b')
  const ids = (app: FastifyInstance): string[] => app.atlasOpsStats().instances.map((s) => s.instance)
  await waitUntil('each lists both', () => ids(a).join() === 'instance-a,instance-b' && ids(b).join() === 'instance-b,instance-a', 5000)

  // A committed event shows on its instance's sample as committed per second, on both lists.
  await a.taskRepository.create('red', { title: 'counted' }, { actor: 'alice' })
  await waitUntil('b sees a\'s commit rate', () => (b.atlasOpsStats().instances.find((s) => s.instance === 'instance-a')?.committedPerSecond ?? 0) > 0, 5000)

  // Anyone on the bus can send samples: the malformed are dropped, the well-formed are shown
  // under the id they came with (misleading at worst), and only so many ids are kept.
  const rogue = new MemoryBroker({ bus, instanceId: 'rogue' })
  t.teardown(async () => { await rogue.close() })
  const valid = { intervalMs: 1000, connections: 7, subscriptions: 7, committedPerSecond: 1, deliveredPerSecond: 1, lagP50Ms: null, lagP99Ms: 1, outboxUnpublished: 0, brokerConnected: true }
  for (const bad of ['not json', '[]', JSON.stringify({ ...valid, connections: -1 }), JSON.stringify({ ...valid, lagP99Ms: 'fast' }), JSON.stringify({ ...valid, brokerConnected: 1 }), JSON.stringify({ ...valid, connections: 1e300 }), JSON.stringify({ ...valid, pad: 'x'.repeat(2000) })]) {
    rogue.publishStats(bad)
  }
  await new Promise((resolve) => setTimeout(resolve, 0))
  t.notOk(ids(a).includes('rogue'), 'no malformed sample is kept')
  rogue.publishStats(JSON.stringify({ ...valid, instance: 'someone-else', extra: true }))
  await new Promise((resolve) => setTimeout(resolve, 0))
  const forged = a.atlasOpsStats().instances.find((s) => s.instance === 'rogue')
  t.match(forged, { instance: 'rogue', connections: 7, self: false }, 'a well-formed sample is shown under the sender\'s id, not the one it claims')
  t.notOk(forged !== undefined && 'extra' in forged, 'only the known figures are kept')

  const bounded = await opsApp(t, bus, 'instance-bounded', 2)
  const flood = Array.from({ length: 10 }, (_, i) => new MemoryBroker({ bus, instanceId: `flood-${i}` }))
  t.teardown(async () => { await Promise.all(flood.map(async (f) => { await f.close() })) })
  for (const f of flood) f.publishStats(JSON.stringify(valid))
  await new Promise((resolve) => setTimeout(resolve, 0))
  t.ok(bounded.atlasOpsStats().instances.length <= 3, 'at most maxInstances others (and itself)')

  // An instance that stops sending leaves the others' lists within expireMs.
  await b.close()
  await waitUntil('a forgets b', () => !ids(a).includes('instance-b'), 5000)
  t.equal(ids(a)[0], 'instance-a')
})
