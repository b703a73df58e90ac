import { mkdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import type { Browser, Page } from 'playwright-core'
import { signToken } from '../examples/jwt-auth.js'
import { TEST_SECRET, api, startInstance, tokenFor, type Instance } from './helpers/app.js'
import { boardFromTasks, card, column, launchBrowser, openBoard, waitForBoard, waitForState, type Board } from './helpers/browser.js'

const ARTIFACTS = fileURLToPath(new URL('../test-artifacts/', import.meta.url))

// One Chromium for the whole file (two cores are shared); each test gets fresh contexts and a
// fresh server. A missing Chromium fails here, with how to install it.
let browser: Browser
t.before(async () => { browser = await launchBrowser(t) })

async function server (t: Test): Promise<Instance> {
  const dir = t.testdir()
  const demoTokens = await Promise.all(([['alice', ['red']], ['bob', ['red']]] as const).map(async ([userId, teams]) =>
    ({ userId, teams: [...teams], token: await signToken(TEST_SECRET, userId, [...teams]) })))
  return await startInstance(t, { databasePath: `${dir}/atlas.db`, demoTokens })
}

async function serverBoard (instance: Instance): Promise<ReturnType<typeof boardFromTasks>> {
  const list = await api(instance.baseUrl, 'GET', '/teams/red/tasks', { token: await tokenFor('dave', ['red']) })
  return boardFromTasks(list.body.tasks)
}

async function addTask (page: Page, title: string): Promise<void> {
  await page.locator('#new-title').fill(title)
  await page.locator('#new-title').press('Enter')
}

async function activity (page: Page): Promise<string[]> {
  return await page.locator('#activity li[data-seq]').evaluateAll((els) => els.map((el) => (el.firstChild?.textContent ?? '') + (el.childNodes[1]?.textContent ?? '')))
}

function noPageErrors (t: Test, ...boards: Board[]): void {
  for (const board of boards) t.same(board.errors, [], 'no uncaught errors on the page')
}

t.test('two users of one team see each other\'s edits live', async (t) => {
  const instance = await server(t)
  const alice = await openBoard(t, browser, `${instance.baseUrl}/#token=${await tokenFor('alice', ['red'])}`)
  // Bob signs in the way a developer would: picking a demo user the server lists.
  const bob = await openBoard(t, browser, `${instance.baseUrl}/`)
  await bob.page.locator('#demo-list button[data-user="bob"]').click()
  await Promise.all([waitForState(alice.page, 'open'), waitForState(bob.page, 'open')])
  t.equal(await bob.page.locator('#user').textContent(), 'bob')

  await addTask(alice.page, 'Write the spec')
  await card(bob.page, 'Write the spec').waitFor()
  t.equal(await card(bob.page, 'Write the spec').getAttribute('data-status'), 'todo')

  await card(bob.page, 'Write the spec').locator('[data-action="right"]').click()
  await column(alice.page, 'in_progress').locator('.card', { hasText: 'Write the spec' }).waitFor()

  await card(bob.page, 'Write the spec').locator('[data-action="edit"]').click()
  await bob.page.locator('.card.editing input[name="title"]').fill('Write the spec, v2')
  await bob.page.locator('.card.editing textarea[name="description"]').fill('Cover resume and resync.')
  await bob.page.locator('.card.editing button[type="submit"]').click()
  await card(alice.page, 'Write the spec, v2').locator('.card-desc', { hasText: 'Cover resume and resync.' }).waitFor()

  await addTask(alice.page, 'Ship it')
  await card(alice.page, 'Ship it').locator('[data-action="right"]').click()
  await column(bob.page, 'in_progress').locator('.card', { hasText: 'Ship it' }).waitFor()
  await card(alice.page, 'Ship it').locator('[data-action="right"]').click()
  await column(bob.page, 'done').locator('.card', { hasText: 'Ship it' }).waitFor()

  await addTask(bob.page, 'Throwaway')
  await card(alice.page, 'Throwaway').waitFor()
  await card(alice.page, 'Throwaway').locator('[data-action="delete"]').click()
  await card(bob.page, 'Throwaway').waitFor({ state: 'detached' })
  await addTask(bob.page, 'Review the board')

  const expected = await serverBoard(instance)
  t.equal(expected.length, 3)
  await Promise.all([waitForBoard(alice.page, expected), waitForBoard(bob.page, expected)])
  t.same(await alice.page.locator('.card.pending').count(), 0, 'nothing left pending')

  const feed = await activity(alice.page)
  t.ok(feed.includes('bob moved “Write the spec” from To do to In progress'), 'alice sees who moved what')
  t.ok(feed.includes('bob renamed “Write the spec” to “Write the spec, v2”; edited the description of “Write the spec, v2”'), 'and who renamed what')
  t.ok(feed.includes('alice deleted “Throwaway”'), 'and who deleted what')

  mkdirSync(ARTIFACTS, { recursive: true })
  await alice.page.mouse.move(0, 0)
  await alice.page.screenshot({ path: `${ARTIFACTS}board.png`, fullPage: true })
  noPageErrors(t, alice, bob)
})

t.test('when the server drops every socket, both pages come back open and in sync, with what changed meanwhile', async (t) => {
  const instance = await server(t)
  const dave = await tokenFor('dave', ['red'])
  const seed = async (title: string): Promise<{ id: string }> => (await api(instance.baseUrl, 'POST', '/teams/red/tasks', { token: dave, body: { title } })).body
  const keep = await seed('Keep me')
  const drop = await seed('Drop me')
  const alice = await openBoard(t, browser, `${instance.baseUrl}/#token=${await tokenFor('alice', ['red'])}`, { gate: true })
  const bob = await openBoard(t, browser, `${instance.baseUrl}/#token=${await tokenFor('bob', ['red'])}`, { gate: true })
  await Promise.all([waitForState(alice.page, 'open'), waitForState(bob.page, 'open')])
  const before = await serverBoard(instance)
  await Promise.all([waitForBoard(alice.page, before), waitForBoard(bob.page, before)])

  // Every socket dies, and the pages cannot get back in until the changes below are made.
  alice.gate.blocked = bob.gate.blocked = true
  for (const socket of instance.app.websocketServer.clients) socket.terminate()
  await Promise.all([waitForState(alice.page, 'reconnecting'), waitForState(bob.page, 'reconnecting')])

  await seed('Made while away')
  t.equal((await api(instance.baseUrl, 'PATCH', `/teams/red/tasks/${keep.id}`, { token: dave, body: { status: 'done' } })).status, 200)
  t.equal((await api(instance.baseUrl, 'DELETE', `/teams/red/tasks/${drop.id}`, { token: dave })).status, 204)
  const after = await serverBoard(instance)
  t.not(JSON.stringify(after), JSON.stringify(before))

  alice.gate.blocked = bob.gate.blocked = false
  await Promise.all([waitForState(alice.page, 'open'), waitForState(bob.page, 'open')])
  await Promise.all([waitForBoard(alice.page, after), waitForBoard(bob.page, after)])
  // Resumed, not just reloaded: the missed events themselves reached the activity feed.
  for (const board of [alice, bob]) {
    t.same((await activity(board.page)).slice(0, 3), [
      'dave deleted “Drop me”',
      'dave moved “Keep me” from To do to Done',
      'dave created “Made while away”'
    ])
  }
  noPageErrors(t, alice, bob)
})

t.test('an optimistic edit the server refuses (stale If-Match) is rolled back on screen', async (t) => {
  const instance = await server(t)
  const bobToken = await tokenFor('bob', ['red'])
  const task = (await api(instance.baseUrl, 'POST', '/teams/red/tasks', { token: bobToken, body: { title: 'Draft' } })).body as { id: string }
  const alice = await openBoard(t, browser, `${instance.baseUrl}/#token=${await tokenFor('alice', ['red'])}`, { gate: true })
  await waitForState(alice.page, 'open')
  await card(alice.page, 'Draft').waitFor()

  // Bob changes the task while alice's page hears nothing from the server.
  alice.gate.muted = true
  const bobs = await api(instance.baseUrl, 'PATCH', `/teams/red/tasks/${task.id}`, { token: bobToken, body: { title: 'Draft by bob' } })
  t.equal(bobs.status, 200)
  t.equal(await card(alice.page, 'Draft').getAttribute('data-version'), '1', 'the page still has version 1')

  // Alice's PATCH is held until the test has seen the optimistic card.
  let release!: () => void
  const released = new Promise<void>((resolve) => { release = resolve })
  const sent: Array<Record<string, string>> = []
  await alice.page.route('**/teams/red/tasks/*', async (route) => {
    if (route.request().method() === 'PATCH') {
      sent.push(route.request().headers())
      await released
    }
    await route.continue()
  })
  await card(alice.page, 'Draft').locator('[data-action="edit"]').click()
  await alice.page.locator('.card.editing input[name="title"]').fill('Draft by alice')
  await alice.page.locator('.card.editing button[type="submit"]').click()
  await alice.page.locator('.card.pending', { hasText: 'Draft by alice' }).waitFor()
  t.pass('the edit showed at once, marked as saving')
  release()

  await card(alice.page, 'Draft by bob').waitFor()
  t.equal(await card(alice.page, 'Draft by alice').count(), 0, 'the refused edit is gone')
  t.equal(await card(alice.page, 'Draft by bob').getAttribute('data-version'), '2', 'the server\'s current task is shown')
  await alice.page.locator('.notice', { hasText: 'someone else changed the task first' }).waitFor()
  t.equal(sent[0]?.['if-match'], '"1"', 'the page sent the version it had')

  // Hearing again: the next event shows the hole left by the muted one and the page reloads.
  alice.gate.muted = false
  await api(instance.baseUrl, 'PATCH', `/teams/red/tasks/${task.id}`, { token: bobToken, body: { status: 'in_progress' } })
  await waitForBoard(alice.page, await serverBoard(instance))
  noPageErrors(t, alice)
})

t.test('the page\'s token travels as a subprotocol entry, never in the URL; a refused one takes the page back to sign-in', async (t) => {
  const instance = await server(t)
  const upgrades: Array<{ url: string, protocols: string }> = []
  // Before atlas-credentials takes the entry out of the request.
  instance.app.server.prependListener('upgrade', (request: import('node:http').IncomingMessage) => {
    upgrades.push({ url: request.url ?? '', protocols: String(request.headers['sec-websocket-protocol']) })
  })
  const token = await tokenFor('alice', ['red'])
  const alice = await openBoard(t, browser, `${instance.baseUrl}/#token=${token}`)
  await waitForState(alice.page, 'open')
  t.equal(upgrades.length, 1)
  t.notOk(upgrades[0].url.includes(token) || upgrades[0].url.includes('access_token'), 'no credential in the URL')
  const [protocol, entry] = upgrades[0].protocols.split(',').map((s) => s.trim())
  t.equal(protocol, 'atlas.v1')
  t.equal(Buffer.from(entry.replace(/^base64url\.bearer\.atlas\./, ''), 'base64url').toString(), token, 'the token, base64url-encoded')

  // A token the server refuses: 4001 after the handshake, so the page knows at once (no retry loop).
  const before = upgrades.length
  const mallory = await openBoard(t, browser, `${instance.baseUrl}/#token=not-a-valid-token`)
  await mallory.page.locator('#sign-in-error', { hasText: 'That access token was refused' }).waitFor()
  t.equal(await mallory.page.locator('#board-view').isHidden(), true, 'back to sign-in')
  t.equal(upgrades.length, before + 1, 'one attempt')
  noPageErrors(t, alice, mallory)
})
