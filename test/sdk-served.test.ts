import Fastify from 'fastify'
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname } from 'node:path'
import t from 'tap'
import { signToken } from '../examples/jwt-auth.js'
import { atlasClientAssets } from '../plugins/index.js'
import { TEST_SECRET, listenInstance, startInstance } from './helpers/app.js'

// The files atlasClientAssets serves: the installed atlas-realtime-client package's dist/ (here
// the client/ workspace, which npm links into node_modules).
const SDK_PACKAGE = dirname(createRequire(import.meta.url).resolve('atlas-realtime-client/package.json'))

/** An old or missing build of the SDK package would make these tests about old code. */
function assertSdkBuilt (): void {
  for (const folder of ['client', 'protocol']) {
    const sources = `${SDK_PACKAGE}/../${folder}`
    for (const file of readdirSync(sources).filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))) {
      const js = `${SDK_PACKAGE}/dist/${folder}/${file.replace(/\.ts$/, '.js')}`
      if (folder === 'protocol' && !existsSync(js)) continue // only what the SDK imports is built there
      if (!existsSync(js)) throw new Error(`${js} is missing: run npm run build (npm test does it first)`)
      if (statSync(js).mtimeMs < statSync(`${sources}/${file}`).mtimeMs) throw new Error(`${js} is older than its source: run npm run build`)
    }
  }
}

t.test('the example serves the SDK as browser-loadable ES modules that import nothing outside it', async (t) => {
  assertSdkBuilt()
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

t.test('atlasClientAssets serves the installed SDK package under the prefix it is registered with', async (t) => {
  assertSdkBuilt()
  const app = Fastify()
  await app.register(atlasClientAssets, { prefix: '/atlas-sdk' })
  const { baseUrl } = await listenInstance(t, app)
  const index = await fetch(`${baseUrl}/atlas-sdk/client/index.js`)
  t.equal(index.status, 200)
  t.match(index.headers.get('content-type'), /^text\/javascript/)
  t.equal(index.headers.get('cache-control'), 'no-cache', 'revalidated by default: the URLs carry no version')
  t.ok(index.headers.get('etag'), 'with a validator to revalidate against')
  t.equal(await index.text(), readFileSync(`${SDK_PACKAGE}/dist/client/index.js`, 'utf8'), 'the package\'s own file')
  const constants = await fetch(`${baseUrl}/atlas-sdk/protocol/constants.js`)
  t.equal(constants.status, 200)
  t.equal(await constants.text(), readFileSync(`${SDK_PACKAGE}/dist/protocol/constants.js`, 'utf8'))
  for (const path of ['/atlas-sdk/client/index.d.ts', '/atlas-sdk/protocol/schemas.js', '/atlas-sdk/protocol/schemas.d.ts', '/atlas-sdk/package.json',
    '/atlas-sdk/client/..%2F..%2Fpackage.json', '/client/index.js', '/sdk/client/index.js']) {
    t.equal((await fetch(baseUrl + path)).status, 404, `${path} is not served`)
  }
  t.notOk(app.hasReplyDecorator('sendFile'), 'its @fastify/static instances stay inside: the app\'s reply.sendFile is its own business')

  const cached = Fastify()
  await cached.register(atlasClientAssets, { prefix: '/sdk', cacheControl: 'public, max-age=300' })
  const served = await cached.inject('/sdk/client/index.js')
  t.equal(served.statusCode, 200)
  t.equal(served.headers['cache-control'], 'public, max-age=300')
  await cached.close()
})

t.test('atlasClientAssets refuses an unknown or malformed option, naming it', async (t) => {
  for (const [options, message] of [
    [{ prefix: '/sdk', maxAge: 60 }, /^atlas-client-assets: .*maxAge/],
    [{ prefix: 'sdk' }, /^atlas-client-assets: option prefix /],
    [{ cacheControl: 3600 }, /^atlas-client-assets: option cacheControl /]
  ] as const) {
    const app = Fastify()
    await t.rejects(async () => { await app.register(atlasClientAssets, options as never); await app.ready() }, { code: 'ATLAS_ERR_OPTION', message }, JSON.stringify(options))
    await app.close()
  }
})
