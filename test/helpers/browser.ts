import { existsSync, readdirSync, statSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { chromium, type Browser, type BrowserContext, type Locator, type Page } from 'playwright-core'

/** Debian's Chromium; playwright cannot download its own browsers here. */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic']

const root = fileURLToPath(new URL('../../', import.meta.url))

/**
 * Why the browser tests cannot run here, or undefined when they can. These are failures, not
 * skips: a green run must mean the page was tested.
 */
export function browserTestProblem (): string | undefined {
  if (!existsSync(CHROMIUM_PATH)) {
    return `Chromium is missing at ${CHROMIUM_PATH}: apt-get install chromium (the CI script installs it), or set CHROMIUM_PATH`
  }
  // The page loads the compiled SDK (and the protocol constants it imports) from the client
  // package's build, client/dist/: an old build would test old code.
  // Of protocol/, the page loads only constants.js (the SDK's one runtime import there).
  const sources = { client: readdirSync(`${root}client`).filter((f) => f.endsWith('.ts')), protocol: ['constants.ts'] }
  for (const [folder, files] of Object.entries(sources)) {
    for (const file of files) {
      const js = `client/dist/${folder}/${file.replace(/\.ts$/, '.js')}`
      if (!existsSync(`${root}${js}`)) return `${js} is missing: run npm run build (npm test does it first)`
      if (statSync(`${root}${js}`).mtimeMs < statSync(`${root}${folder}/${file}`).mtimeMs) return `${js} is older than its source: run npm run build`
    }
  }
  return undefined
}

export async function launchBrowser (t: { teardown (fn: () => unknown): void }): Promise<Browser> {
  const problem = browserTestProblem()
  if (problem !== undefined) throw new Error(problem)
  const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: ARGS })
  t.teardown(async () => { await browser.close() })
  return browser
}

/**
 * Test control over one browser context's WebSocket to /realtime (through playwright's
 * WebSocket routing; the socket to the server is still real): `blocked` makes new sockets
 * fail at once (the server looks unreachable), `muted` drops what the server sends.
 */
export interface SocketGate {
  blocked: boolean
  muted: boolean
}

export interface Board {
  context: BrowserContext
  page: Page
  gate: SocketGate
  /** Uncaught errors on the page. */
  errors: string[]
}

export async function openBoard (
  t: { teardown (fn: () => unknown): void },
  browser: Browser,
  url: string,
  options: { gate?: boolean } = {}
): Promise<Board> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } })
  t.teardown(async () => { await context.close() })
  const gate: SocketGate = { blocked: false, muted: false }
  if (options.gate === true) {
    await context.routeWebSocket(/\/realtime\b/, (ws) => {
      if (gate.blocked) {
        void ws.close({ code: 1013, reason: 'blocked by the test' })
        return
      }
      const server = ws.connectToServer()
      server.onMessage((message) => { if (!gate.muted) ws.send(message) })
    })
  }
  const page = await context.newPage()
  const errors: string[] = []
  page.on('pageerror', (err) => errors.push(err.message))
  await page.goto(url)
  return { context, page, gate, errors }
}

/** Resolves when the page's connection badge shows `state`. */
export async function waitForState (page: Page, state: string, timeout = 15_000): Promise<void> {
  await page.locator(`#connection[data-state="${state}"]`).waitFor({ timeout })
}

export function card (page: Page, title: string): Locator {
  return page.locator('.card', { has: page.locator('.card-title', { hasText: new RegExp(`^${escapeRegExp(title)}$`) }) })
}

export function column (page: Page, status: string): Locator {
  return page.locator(`[data-column="${status}"]`)
}

/** What the page shows, as comparable data: one entry per card, sorted by id. */
export async function boardOf (page: Page): Promise<Array<{ id: string, title: string, status: string, version: number, column: string }>> {
  const cards = await page.locator('.card').evaluateAll((els) => els.map((el) => ({
    id: (el as HTMLElement).dataset.taskId ?? '',
    title: el.querySelector('.card-title')?.textContent ?? '',
    status: (el as HTMLElement).dataset.status ?? '',
    version: Number((el as HTMLElement).dataset.version),
    column: (el.closest('[data-column]') as HTMLElement | null)?.dataset.column ?? ''
  })))
  return cards.sort((a, b) => a.id.localeCompare(b.id))
}

/** The server's list in the same shape as boardOf. */
export function boardFromTasks (tasks: Array<{ id: string, title: string, status: string, version: number }>): Array<{ id: string, title: string, status: string, version: number, column: string }> {
  return tasks.map(({ id, title, status, version }) => ({ id, title, status, version, column: status })).sort((a, b) => a.id.localeCompare(b.id))
}

function escapeRegExp (text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

/** Waits until the page shows exactly `expected` (as boardOf gives it); the error shows both on timeout. */
export async function waitForBoard (page: Page, expected: Awaited<ReturnType<typeof boardOf>>, timeout = 15_000): Promise<void> {
  try {
    await page.waitForFunction((want) => {
      const cards = (Array.from(document.querySelectorAll('.card')) as HTMLElement[]).map((el) => ({
        id: el.dataset.taskId ?? '',
        title: el.querySelector('.card-title')?.textContent ?? '',
        status: el.dataset.status ?? '',
        version: Number(el.dataset.version),
        column: (el.closest('[data-column]') as HTMLElement | null)?.dataset.column ?? ''
      })).sort((a, b) => a.id.localeCompare(b.id))
      return JSON.stringify(cards) === JSON.stringify(want)
    }, expected, { timeout })
  } catch (err) {
    throw new Error(`the page never showed the expected board.\nexpected: ${JSON.stringify(expected)}\nshown:    ${JSON.stringify(await boardOf(page))}\n${(err as Error).message}`)
  }
}
