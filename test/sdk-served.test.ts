import t from 'tap'
import { signToken } from '../examples/jwt-auth.js'
import { TEST_SECRET, startInstance } from './helpers/app.js'
import { browserTestProblem } from './helpers/browser.js'

t.test('the example serves the SDK as browser-loadable ES modules that import nothing outside it', async (t) => {
  // Serves dist/: an old or missing build would make this test about old code.
  const problem = browserTestProblem()
  if (problem !== undefined && !problem.startsWith('Chromium')) throw new Error(problem)
  const dir = t.testdir()
  const instance = await startInstance(t, { databasePath: `${dir}/atlas.db` })
  const loaded = new Map<string, string>()
  const queue = ['index.js']
  while (queue.length > 0) {
    const file = queue.shift() as string
    if (loaded.has(file)) continue
    const response = await fetch(`${instance.baseUrl}/sdk/${file}`)
    t.equal(response.status, 200, `/sdk/${file}`)
    t.match(response.headers.get('content-type'), /^text\/javascript/)
    const source = await response.text()
    loaded.set(file, source)
    for (const [, specifier] of source.matchAll(/(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]/g)) {
      t.match(specifier, /^\.\/[a-z-]+\.js$/, `${file} imports ${specifier}: only SDK siblings, never server code or packages`)
      queue.push(specifier.slice(2))
    }
  }
  t.ok(loaded.has('task-store.js') && loaded.has('connection.js'), 'the whole SDK is reachable from index.js')
  t.notOk([...loaded.values()].some((source) => /from\s*['"](?:fastify|ws|node:)/.test(source)), 'no static import of Fastify, ws or Node modules')

  for (const path of ['/sdk/..%2Fhub.js', '/sdk/hub.js', '/sdk/.env', '/sdk/index.ts']) {
    t.equal((await fetch(instance.baseUrl + path)).status, 404, `${path} is not served`)
  }
  const page = await fetch(`${instance.baseUrl}/`)
  t.match(page.headers.get('content-type'), /^text\/html/)
  t.match(await page.text(), /<script type="module" src="\/board.js">/)
  t.match((await fetch(`${instance.baseUrl}/board.css`)).headers.get('content-type'), /^text\/css/)
})

t.test('demo tokens are listed only when the app is given them (development, no JWT_SECRET)', async (t) => {
  const dir = t.testdir()
  const plain = await startInstance(t, { databasePath: `${dir}/plain.db` })
  t.equal((await fetch(`${plain.baseUrl}/demo/tokens`)).status, 404, 'no route without demo tokens')

  const token = await signToken(TEST_SECRET, 'alice', ['red'])
  const dev = await startInstance(t, { databasePath: `${dir}/dev.db`, demoTokens: [{ userId: 'alice', teams: ['red'], token }] })
  const response = await fetch(`${dev.baseUrl}/demo/tokens`)
  t.equal(response.status, 200)
  t.equal(response.headers.get('cache-control'), 'no-store')
  t.same(await response.json(), { users: [{ userId: 'alice', teams: ['red'], token }] })
})
