/**
 * Cross-site WebSocket hijacking, tried in a real browser: an API with cookie-session auth, a
 * user who signed in, and a page on another origin (same host, other port: same site, so the
 * browser sends the session cookie with the upgrade) that opens the API's socket. The Origin
 * check must refuse it while the API's own page connects as usual.
 */
import t, { type Test } from 'tap'
import Fastify from 'fastify'
import { join } from 'node:path'
import { atlasRealtime } from '../plugins/index.js'
import type { Principal } from '../lib/types.js'
import { listenInstance, type Instance } from './helpers/app.js'
import { launchBrowser } from './helpers/browser.js'

const SESSIONS = new Map<string, Principal>([['s-alice', { userId: 'alice', teams: ['red'] }]])

/** The page both origins serve: opens the API's socket (with whatever cookie the browser sends) and records what happens. */
function probePage (wsUrl: string | undefined): string {
  return `<!doctype html><title>probe</title><script>
    window.outcome = new Promise((resolve) => {
      const frames = []
      const socket = new WebSocket(${wsUrl === undefined ? "'ws://' + location.host + '/realtime'" : JSON.stringify(wsUrl)})
      socket.onmessage = (m) => { frames.push(JSON.parse(m.data)); if (frames.some((f) => f.type === 'task.created')) resolve({ opened: true, frames }) }
      socket.onopen = () => { fetch('/make-event', { method: 'POST' }).catch(() => {}) }
      socket.onclose = (e) => resolve({ opened: frames.length > 0, frames, code: e.code })
    })
  </script>`
}

async function startApi (t: Test, allowedOrigins?: string[]): Promise<Instance> {
  const app = Fastify()
  await app.register(atlasRealtime, {
    // Cookie sessions, as many integrators have them: no token in the page at all.
    authenticate: (request) => {
      const cookie = /(?:^|;\s*)session=([^;]+)/.exec(request.headers.cookie ?? '')?.[1]
      return cookie === undefined ? null : SESSIONS.get(cookie)
    },
    database: { databasePath: join(t.testdir(), 'atlas.db') },
    websocket: allowedOrigins === undefined ? {} : { allowedOrigins }
  })
  app.get('/login', async (_request, reply) => await reply.header('set-cookie', 'session=s-alice; Path=/; HttpOnly').type('text/html').send('<p>signed in</p>'))
  app.get('/', async (_request, reply) => await reply.type('text/html').send(probePage(undefined)))
  app.post('/make-event', async () => (await app.taskRepository.create('red', { title: 'secret plan' }, { actor: 'alice' })).task)
  return await listenInstance(t, app)
}

/** A page on another origin of the same host: it can only open the socket, not call the API's routes. */
async function startOtherSite (t: Test, api: Instance): Promise<string> {
  const app = Fastify()
  app.get('/', async (_request, reply) => await reply.type('text/html').send(probePage(api.wsUrl)))
  // It cannot POST to the API cross-origin with JSON; it asks the test to make an event instead.
  app.post('/make-event', async () => { await fetch(`${api.baseUrl}/make-event`, { method: 'POST' }); return {} })
  return (await listenInstance(t, app)).baseUrl
}

async function visit (t: Test, apiUrl: string, pageUrl: string): Promise<{ opened: boolean, frames: Array<{ type: string }>, code?: number }> {
  const browser = await launchBrowser(t)
  const context = await browser.newContext()
  t.teardown(async () => { await context.close() })
  const page = await context.newPage()
  await page.goto(`${apiUrl}/login`)
  await page.goto(pageUrl)
  return await page.evaluate(async () => await (window as unknown as { outcome: Promise<{ opened: boolean, frames: Array<{ type: string }>, code?: number }> }).outcome)
}

t.test('a page on another origin cannot open the socket with the user\'s session cookie', async (t) => {
  const api = await startApi(t)
  const other = await startOtherSite(t, api)
  const outcome = await visit(t, api.baseUrl, `${other}/`)
  t.equal(outcome.opened, false, 'no frame reached the foreign page')
  t.equal(outcome.code, 1006, 'the browser saw a refused upgrade')
  t.notOk(outcome.frames.some((f) => f.type === 'task.created'), 'the team\'s events stayed private')
})

t.test('the API\'s own page connects with the cookie and gets the team\'s events', async (t) => {
  const api = await startApi(t)
  const outcome = await visit(t, api.baseUrl, `${api.baseUrl}/`)
  t.equal(outcome.opened, true)
  t.match(outcome.frames, [{ type: 'welcome', userId: 'alice' }, { type: 'subscribed', teamId: 'red' }, { type: 'task.created', teamId: 'red' }])
})

t.test('control: allowing every origin lets the foreign page read the team\'s events (what the check prevents)', async (t) => {
  const api = await startApi(t, ['*'])
  const other = await startOtherSite(t, api)
  const outcome = await visit(t, api.baseUrl, `${other}/`)
  t.equal(outcome.opened, true, 'the cookie went along with the cross-origin upgrade')
  t.ok(outcome.frames.some((f) => f.type === 'task.created'), 'and the foreign page read the event')
})
