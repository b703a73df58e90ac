import t, { type Test } from 'tap'
import type { Browser, Page, Request, Route } from 'playwright-core'
import { signToken } from '../examples/jwt-auth.js'
import type { Task, TaskEvent } from '../client/index.js'
import { TEST_SECRET, api, connectClient, startInstance, tokenFor, type Instance } from './helpers/app.js'
import { boardFromTasks, card, column, launchBrowser, openBoard, waitForBoard, waitForState } from './helpers/browser.js'

// Offline-first edits on the board page (examples/public/board.js over the SDK's TaskStore),
// in Chromium against a real server: an edit made offline survives a reload and lands once; a
// request whose answer was lost is retried with the same Idempotency-Key and applied once.

const QUEUE_KEY = 'atlas-realtime:queue:alice:red'

let browser: Browser
t.before(async () => { browser = await launchBrowser(t) })

async function server (t: Test): Promise<Instance> {
  const dir = t.testdir()
  const demoTokens = await Promise.all(([['alice', ['red']], ['bob', ['red']]] as const).map(async ([userId, teams]) =>
    ({ userId, teams: [...teams], token: await signToken(TEST_SECRET, userId, [...teams]) })))
  return await startInstance(t, { databasePath: `${dir}/atlas.db`, demoTokens })
}

async function serverTasks (instance: Instance): Promise<Task[]> {
  return (await api(instance.baseUrl, 'GET', '/teams/red/tasks', { token: await tokenFor('dave', ['red']) })).body.tasks
}

async function seed (instance: Instance, title: string): Promise<Task> {
  return (await api(instance.baseUrl, 'POST', '/teams/red/tasks', { token: await tokenFor('dave', ['red']), body: { title } })).body
}

/** The team's event log as the server keeps it: every event since seq 0. */
async function eventLog (t: Test, instance: Instance): Promise<TaskEvent[]> {
  const reader = await connectClient(t, instance, await tokenFor('dave', ['red']), { teams: ['red'], since: { red: 0 } })
  const events = [...reader.events] as TaskEvent[]
  await reader.close()
  return events
}

const isTaskRoute = (url: URL): boolean => url.pathname.startsWith('/teams/red/tasks')
const isMutation = (request: Request): boolean => ['POST', 'PATCH', 'DELETE'].includes(request.method())

/** What the page keeps in localStorage for alice's red queue. */
async function storedQueue (page: Page): Promise<Array<{ mutationId: string, kind: string, taskId: string, patch?: Record<string, unknown>, ifMatch: number | null }>> {
  const text = await page.evaluate((key) => localStorage.getItem(key), QUEUE_KEY)
  return text === null ? [] : JSON.parse(text).mutations
}

/** Drops every socket: the page reconnects, and its store sends what waits at once. */
function dropSockets (instance: Instance): void {
  for (const socket of instance.app.websocketServer.clients) socket.terminate()
}

t.test('an edit made while the page is offline survives a reload and lands exactly once when the network returns', async (t) => {
  const instance = await server(t)
  const task = await seed(instance, 'Trip')
  const alice = await openBoard(t, browser, `${instance.baseUrl}/#token=${await tokenFor('alice', ['red'])}`)
  const { page, context } = alice
  await waitForState(page, 'open')
  await card(page, 'Trip').waitFor()

  await context.setOffline(true)
  await card(page, 'Trip').locator('[data-action="right"]').click()
  await column(page, 'in_progress').locator('.card.unsent', { hasText: 'Trip' }).waitFor()
  await page.locator('#unsent[data-count="1"]').waitFor()
  t.pass('the move shows at once, marked as not sent, and the page counts it')
  const queued = await storedQueue(page)
  t.match(queued, [{ kind: 'update', taskId: task.id, patch: { status: 'in_progress' }, ifMatch: 1 }], 'persisted in localStorage with its If-Match base')
  const key = queued[0].mutationId

  // The page itself needs the network to reload; its mutations still fail (no answer) until later.
  const attempts: string[] = []
  let aborting = true
  const firstAbortAfterReload = new Promise<void>((resolve) => {
    void page.route(isTaskRoute, async (route: Route) => {
      if (!isMutation(route.request())) return await route.continue()
      attempts.push(route.request().headers()['idempotency-key'])
      if (!aborting) return await route.continue()
      resolve()
      await route.abort('internetdisconnected')
    })
  })
  await context.setOffline(false)
  await page.reload()
  await waitForState(page, 'open')
  await column(page, 'in_progress').locator('.card.unsent', { hasText: 'Trip' }).waitFor()
  t.pass('after the reload, the edit is back on top of the list')
  await firstAbortAfterReload
  t.match((await serverTasks(instance)).find((x) => x.id === task.id), { status: 'todo', version: 1 }, 'the server does not have it yet')
  t.equal(await card(page, 'Trip').getAttribute('data-status'), 'in_progress', 'a failed attempt does not roll it back')

  aborting = false
  dropSockets(instance)
  await waitForState(page, 'open')
  // The connection is back: the store sends at once; the card stops being pending once it is confirmed.
  await page.locator('.card.pending').waitFor({ state: 'detached' })
  const after = await serverTasks(instance)
  t.match(after.find((x) => x.id === task.id), { status: 'in_progress', version: 2 }, 'landed, once: version 2')
  await waitForBoard(page, boardFromTasks(after))
  t.ok(attempts.length >= 2 && attempts.every((k) => k === key), 'every attempt carried the key the edit got when it was made')
  const log = await eventLog(t, instance)
  t.equal(log.filter((e) => e.mutationId === key).length, 1, 'one event with its mutationId')
  t.same(await storedQueue(page), [], 'the stored queue is empty')
  await page.locator('#unsent').waitFor({ state: 'hidden' })
  t.same(alice.errors, [], 'no uncaught errors on the page')
})

t.test('a request whose answer was lost is retried with the same key and not applied twice', async (t) => {
  const instance = await server(t)
  const task = await seed(instance, 'Draft')
  const alice = await openBoard(t, browser, `${instance.baseUrl}/#token=${await tokenFor('alice', ['red'])}`, { gate: true })
  const { page } = alice
  await waitForState(page, 'open')
  await card(page, 'Draft').waitFor()
  // The page hears no event: only the retried request can tell it what became of its edit.
  alice.gate.muted = true

  const patches: Array<{ key: string, status: number, replayed: boolean }> = []
  let secondDone!: () => void
  const second = new Promise<void>((resolve) => { secondDone = resolve })
  await page.route(isTaskRoute, async (route: Route) => {
    if (route.request().method() !== 'PATCH') return await route.continue()
    const key = route.request().headers()['idempotency-key']
    // The request reaches the server, which commits it...
    const response = await route.fetch()
    patches.push({ key, status: response.status(), replayed: response.headers()['idempotency-replayed'] === 'true' })
    if (patches.length === 1) {
      // ...and its answer is lost on the way back. (Not 'connectionreset': Chromium itself resends a
      // request whose keep-alive connection was reset, which would hide what the SDK does.)
      await route.abort('failed')
      return
    }
    await route.fulfill({ response })
    if (patches.length === 2) secondDone()
  })
  await card(page, 'Draft').locator('[data-action="right"]').click()
  await Promise.race([second, new Promise((resolve, reject) => setTimeout(() => { reject(new Error(`the edit was not sent again: ${JSON.stringify(patches)}`)) }, 15_000))])
  t.equal(patches[0].key.length > 0, true)
  t.same(patches, [
    { key: patches[0].key, status: 200, replayed: false },
    { key: patches[0].key, status: 200, replayed: true }
  ], 'sent again with the same key; the server answered it as a replay')
  t.match((await serverTasks(instance)).find((x) => x.id === task.id), { status: 'in_progress', version: 2 }, 'applied once')
  t.equal(await card(page, 'Draft').getAttribute('data-status'), 'in_progress', 'the page kept the move throughout')

  alice.gate.muted = false
  dropSockets(instance)
  await waitForState(page, 'open')
  await waitForBoard(page, boardFromTasks(await serverTasks(instance)))
  await page.locator('.card.pending').waitFor({ state: 'detached' })
  const log = await eventLog(t, instance)
  t.equal(log.filter((e) => e.mutationId === patches[0].key).length, 1, 'one event with that mutationId')
  t.equal(log.length, 2, 'the seed and the move, nothing more')
  t.same(alice.errors, [], 'no uncaught errors on the page')
})
