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
  const queue = ['/sdk/client/index.js']
  while (queue.length > 0) {
    const path = queue.shift() as string
    if (loaded.has(path)) continue
    const response = await fetch(`${instance.baseUrl}${path}`)
    t.equal(response.status, 200, path)
    t.match(response.headers.get('content-type'), /^text\/javascript/)
    const source = await response.text()
    loaded.set(path, source)
    for (const [, specifier] of source.matchAll(/(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]/g)) {
      t.match(specifier, path.startsWith('/sdk/client/') ? /^(?:\.\/[a-z-]+|\.\.\/protocol\/constants)\.js$/ : /^$/,
        `${path} imports ${specifier}: only SDK siblings and the protocol's constants, never server code or packages`)
      queue.push(new URL(specifier, `http://x${path}`).pathname)
    }
  }
  t.ok(loaded.has('/sdk/client/task-store.js') && loaded.has('/sdk/client/connection.js'), 'the whole SDK is reachable from index.js')
  t.ok(loaded.has('/sdk/protocol/constants.js'), 'with the protocol constants it imports')
  t.notOk([...loaded.values()].some((source) => /from\s*['"](?:fastify|ws|node:|@sinclair)/.test(source)), 'no static import of Fastify, ws, TypeBox or Node modules')

  for (const path of ['/sdk/index.js', '/sdk/client/..%2F..%2Flib%2Fhub.js', '/sdk/client/..%2Fprotocol%2Fschemas.js', '/sdk/client/hub.js',
    '/sdk/client/.env', '/sdk/client/index.ts', '/sdk/client/index.d.ts', '/sdk/protocol/schemas.js', '/sdk/protocol/index.js']) {
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
