import { execFile } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { builtinModules } from 'node:module'
import { tmpdir } from 'node:os'
import { dirname, join, posix } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import t from 'tap'

// What an integrator gets from npm, checked the way they would meet it: the packages are packed
// as `npm publish` would pack them, installed from the tarballs into an app of its own outside
// this repository, type-checked with libraries checked (skipLibCheck: false, strict), and run.
// Everything here tests the packed files, never this repository's sources.

const root = fileURLToPath(new URL('../', import.meta.url))
const run = promisify(execFile)
const rootPackage = JSON.parse(readFileSync(`${root}package.json`, 'utf8')) as PackageJson
const clientPackage = JSON.parse(readFileSync(`${root}client/package.json`, 'utf8')) as PackageJson
const tsc = `${root}node_modules/typescript/bin/tsc`

interface PackageJson {
  name: string
  version: string
  dependencies?: Record<string, string>
  peerDependencies?: Record<string, string>
  exports?: Record<string, string | Record<string, string>>
}

interface Packed { name: string, filename: string, files: Array<{ path: string }> }

/**
 * The tarballs are packed with --ignore-scripts from the build `npm test` made (pretest): packing
 * would otherwise run `prepare`, a second full build. A stale build would test old code, so it
 * is refused here.
 */
function assertBuilt (): void {
  const pairs: Array<[string, string]> = []
  for (const folder of ['protocol', 'entries', 'lib', 'plugins']) {
    for (const file of readdirSync(`${root}${folder}`, { recursive: true }) as string[]) {
      if (/\.ts$/.test(file) && !file.endsWith('.d.ts')) pairs.push([`${folder}/${file}`, `dist/${folder}/${file.replace(/\.ts$/, '.js')}`])
    }
  }
  for (const file of readdirSync(`${root}client`).filter((f) => f.endsWith('.ts'))) pairs.push([`client/${file}`, `client/dist/client/${file.replace(/\.ts$/, '.js')}`])
  for (const [source, built] of pairs) {
    if (!existsSync(`${root}${built}`)) throw new Error(`${built} is missing: run npm run build (npm test does it first)`)
    if (statSync(`${root}${built}`).mtimeMs < statSync(`${root}${source}`).mtimeMs) throw new Error(`${built} is older than ${source}: run npm run build`)
  }
}

async function npm (args: string[], cwd: string): Promise<string> {
  // npm_config_* set by an enclosing `npm test` (the repository's .npmrc among them) stay out.
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !/^npm_/i.test(key)))
  const { stdout } = await run('npm', args, { cwd, env: { ...env, npm_config_update_notifier: 'false', npm_config_fund: 'false', npm_config_audit: 'false' }, maxBuffer: 64 * 1024 * 1024 })
  return stdout
}

/** Relative links of the Markdown files in `files` that point at no file of the package. */
function brokenDocLinks (files: string[], read: (path: string) => string): string[] {
  const broken: string[] = []
  for (const doc of files.filter((path) => path.endsWith('.md'))) {
    const source = read(doc).replace(/```[\s\S]*?```/g, '')
    for (const [, target] of source.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('#')) continue
      const path = posix.normalize(posix.join(posix.dirname(doc), target.replace(/#.*$/, '')))
      const found = path.endsWith('/') ? files.some((file) => file.startsWith(path)) : files.includes(path)
      if (!found) broken.push(`${doc}: ${target}`)
    }
  }
  return broken
}

/** Relative imports of the packed .js and .d.ts files that point at no packed file. */
function unresolvedImports (files: string[], read: (path: string) => string): string[] {
  const unresolved: string[] = []
  for (const file of files.filter((path) => /\.(js|d\.ts)$/.test(path))) {
    for (const [, specifier] of read(file).matchAll(/(?:\bfrom\s*|\bimport\s*\(?\s*)['"](\.{1,2}\/[^'"]+)['"]/g)) {
      const target = posix.normalize(posix.join(posix.dirname(file), specifier))
      const candidates = file.endsWith('.d.ts') ? [target.replace(/\.js$/, '.d.ts'), target] : [target]
      if (!candidates.some((candidate) => files.includes(candidate))) unresolved.push(`${file} -> ${specifier}`)
    }
  }
  return unresolved
}

/** Packages the packed JavaScript imports statically that the package does not depend on. */
function undeclaredImports (files: string[], read: (path: string) => string, pkg: PackageJson): string[] {
  const declared = new Set([...Object.keys(pkg.dependencies ?? {}), ...Object.keys(pkg.peerDependencies ?? {}), pkg.name])
  const builtins = new Set(builtinModules)
  const found: string[] = []
  for (const file of files.filter((path) => path.endsWith('.js'))) {
    for (const [, specifier] of read(file).matchAll(/(?:^|[\s;])(?:import|export)\s[^'"]*?from\s*['"]([^'"./][^'"]*)['"]|\bimport\s*\(\s*['"]([^'"./][^'"]*)['"]\s*\)/gm)) {
      if (specifier === undefined || specifier.startsWith('node:') || builtins.has(specifier)) continue
      const name = specifier.startsWith('@') ? specifier.split('/').slice(0, 2).join('/') : specifier.split('/')[0]
      if (!declared.has(name)) found.push(`${file} imports ${specifier}`)
    }
  }
  return found
}

t.test('the packages install from their tarballs, type-check with libraries checked and run', async (t) => {
  assertBuilt()
  const work = mkdtempSync(join(tmpdir(), 'atlas-pack-'))
  t.teardown(() => { rmSync(work, { recursive: true, force: true }) })
  const tarballs = `${work}/tarballs`
  mkdirSync(tarballs)

  // Both packages of the repository: the server (root) and the SDK (client/, a workspace).
  const packed = JSON.parse(await npm(['pack', '--ignore-scripts', '--json', '--pack-destination', tarballs, '--workspaces', '--include-workspace-root'], root)) as Packed[]
  const server = packed.find((p) => p.name === rootPackage.name)
  const sdk = packed.find((p) => p.name === clientPackage.name)
  if (server === undefined || sdk === undefined) throw new Error(`npm pack did not pack both packages: ${packed.map((p) => p.name).join(', ')}`)
  const serverFiles = server.files.map((f) => f.path)
  const sdkFiles = sdk.files.map((f) => f.path)
  const readServer = (path: string): string => readFileSync(`${root}${path}`, 'utf8')
  const readSdk = (path: string): string => readFileSync(`${root}client/${path}`, 'utf8')

  await t.test('the server package: what users import and the docs they read, no bench, example or script code', async (t) => {
    t.same(serverFiles.filter((path) => /^dist\/(bench|examples|scripts|client)\//.test(path)), [], 'no dist/bench, dist/examples, dist/scripts (nor an old dist/client)')
    t.same(serverFiles.filter((path) => /\.(ts|tsx)$/.test(path) && !path.endsWith('.d.ts')), [], 'no TypeScript sources')
    for (const [entry, target] of Object.entries(rootPackage.exports ?? {})) {
      for (const file of typeof target === 'string' ? [target] : Object.values(target)) {
        t.ok(serverFiles.includes(file.replace(/^\.\//, '')), `export ${entry}: ${file} is packed`)
      }
    }
    for (const file of ['README.md', 'docs/protocol.md', 'docs/client-sdk.md', 'docs/asyncapi.json', 'docs/openapi.json', 'drizzle/meta/_journal.json', 'dist/lib/db/checkpoint-worker.js']) {
      t.ok(serverFiles.includes(file), `${file} is packed`)
    }
    t.same(brokenDocLinks(serverFiles, readServer), [], 'every relative link of its Markdown points at a packed file')
    t.same(unresolvedImports(serverFiles, readServer), [], 'every relative import of its code and declarations is packed')
    t.same(undeclaredImports(serverFiles, readServer, rootPackage), [], 'every package its code imports is a dependency')
    t.notOk(Object.hasOwn(rootPackage.dependencies ?? {}, 'jose'), 'jose (the example\'s JWTs) is no dependency')
    t.equal(rootPackage.dependencies?.[clientPackage.name], clientPackage.version, 'it depends on the SDK package of the same version (atlas-realtime/client re-exports it)')
  })

  await t.test('the SDK package: the SDK and the protocol files it needs, nothing of the server', async (t) => {
    t.same(sdkFiles.filter((path) => !/^(package\.json|README\.md|dist\/(client|protocol)\/[a-z-]+\.(js|js\.map|d\.ts))$/.test(path)), [], 'only package.json, README.md and dist/client, dist/protocol')
    t.ok(sdkFiles.includes('dist/client/index.js') && sdkFiles.includes('dist/client/index.d.ts') && sdkFiles.includes('dist/protocol/constants.js'))
    t.same(Object.keys(clientPackage.dependencies ?? {}), ['@sinclair/typebox'], 'its one dependency is TypeBox, for the wire types in its declarations')
    t.same(brokenDocLinks(sdkFiles, readSdk), [], 'every relative link of its README points at a packed file')
    t.same(unresolvedImports(sdkFiles, readSdk), [], 'every relative import is packed')
    t.same(undeclaredImports(sdkFiles, readSdk, clientPackage), [], 'no static import of a package')
  })

  // A scratch app outside the repository. Installed from the two tarballs and the registry
  // (--prefer-offline: npm's cache where it has the package). --ignore-scripts: better-sqlite3's
  // install script would fetch a prebuilt binary or compile one (75 s here); the repository's own
  // compiled build of the same version is copied in instead (pinned below, so the JavaScript
  // and the binary match). The install downloads no binary.
  const app = `${work}/app`
  mkdirSync(app)
  const sqliteVersion = (JSON.parse(readFileSync(`${root}node_modules/better-sqlite3/package.json`, 'utf8')) as PackageJson).version
  writeFileSync(`${app}/package.json`, JSON.stringify({
    name: 'scratch-atlas-app',
    private: true,
    type: 'module',
    dependencies: {
      [rootPackage.name]: `file:${tarballs}/${server.filename}`,
      [clientPackage.name]: `file:${tarballs}/${sdk.filename}`,
      'better-sqlite3': sqliteVersion
    }
  }, null, 2))
  await npm(['install', '--prefer-offline', '--ignore-scripts', '--no-audit', '--no-fund', '--loglevel=error'], app)
  const binary = 'node_modules/better-sqlite3/build/Release/better_sqlite3.node'
  mkdirSync(dirname(`${app}/${binary}`), { recursive: true })
  copyFileSync(`${root}${binary}`, `${app}/${binary}`)

  /** tsc (this repository's TypeScript) on consumer files with libraries checked; the errors and the files it loaded. */
  async function typeCheck (name: string, sources: Record<string, string>, options: Record<string, unknown>): Promise<{ errors: string[], loaded: string[] }> {
    for (const [file, source] of Object.entries(sources)) writeFileSync(`${app}/${file}`, source)
    const config = `${app}/tsconfig.${name}.json`
    writeFileSync(config, JSON.stringify({
      compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, skipLibCheck: false, ...options },
      files: Object.keys(sources)
    }))
    const { stdout } = await run(process.execPath, [tsc, '-p', config, '--listFiles'], { cwd: app, maxBuffer: 64 * 1024 * 1024 })
      .catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? String(err) }))
    const lines = stdout.split('\n')
    return { errors: lines.filter((line) => line.includes('error TS')), loaded: lines.filter((line) => line.startsWith('/')) }
  }

  /** Starts run.mjs: the installed server and the installed SDK, in a process of their own. */
  async function startInstalledApp (): Promise<{ stdout: string, error?: string }> {
    writeFileSync(`${app}/run.mjs`, `
      import Fastify from 'fastify'
      import { readFileSync } from 'node:fs'
      import { createRequire } from 'node:module'
      import { atlasClientAssets, atlasRealtime, accessTokenOf } from 'atlas-realtime'
      import { AtlasClient } from 'atlas-realtime-client'
      import * as reexported from 'atlas-realtime/client'

      const app = Fastify()
      await app.register(atlasRealtime, {
        database: { databasePath: process.argv[2] },
        authenticate: (request) => accessTokenOf(request) === 'alice-token' ? { userId: 'alice', teams: ['red'] } : null
      })
      await app.register(atlasClientAssets, { prefix: '/atlas-sdk' })
      await app.listen({ port: 0, host: '127.0.0.1' })
      const base = 'http://127.0.0.1:' + app.server.address().port
      const result = { reexportIsSame: reexported.AtlasClient === AtlasClient }

      const installed = createRequire(import.meta.url).resolve('atlas-realtime-client/package.json').replace(/package\\.json$/, '')
      const served = await fetch(base + '/atlas-sdk/client/index.js')
      result.servedSdk = served.status === 200 && (await served.text()) === readFileSync(installed + 'dist/client/index.js', 'utf8')
      result.servedConstants = (await fetch(base + '/atlas-sdk/protocol/constants.js')).status

      const client = new AtlasClient({ baseUrl: base, token: 'alice-token', teams: ['red'] })
      const subscribed = new Promise((resolve) => client.on('subscribed', resolve))
      const received = new Promise((resolve) => client.on('event', resolve))
      client.connect()
      await subscribed
      const created = await fetch(base + '/teams/red/tasks', {
        method: 'POST',
        headers: { authorization: 'Bearer alice-token', 'content-type': 'application/json' },
        body: JSON.stringify({ title: 'from the tarball' })
      })
      result.created = created.status
      const event = await received
      result.event = { seq: event.seq, teamId: event.teamId, title: JSON.stringify(event).includes('from the tarball') }
      client.close()
      await app.close()
      console.log(JSON.stringify(result))
    `)
    return await run(process.execPath, ['run.mjs', `${work}/atlas.db`], { cwd: app, timeout: 60_000 })
      .then(({ stdout }) => ({ stdout }), (err: { stdout?: string, stderr?: string, message: string }) => ({ stdout: err.stdout ?? '', error: `${err.message}\n${err.stderr ?? ''}` }))
  }

  const clientSource = (specifier: string): string => [
    `import { AtlasClient, CloseCode, TaskStore, type ServerFrame, type Task, type TaskEvent } from '${specifier}'`,
    '',
    "const client = new AtlasClient({ baseUrl: 'https://atlas.example', token: 'token', teams: ['red'] })",
    "client.on('event', (event: TaskEvent) => { const seq: number = event.seq; void seq })",
    "const store = new TaskStore(client, 'red')",
    "store.on('change', (tasks: Task[]) => { const status: 'todo' | 'in_progress' | 'done' | undefined = tasks[0]?.status; void status })",
    "const frame = { type: 'pong' } as ServerFrame",
    'const code: number = CloseCode.GOING_AWAY',
    'export { client, frame, code }',
    ''
  ].join('\n')

  // The three checks below run at once (each is one process), then each subtest reads its outcome.
  const serverCheck = typeCheck('server', { 'server.ts': [
    "import Fastify from 'fastify'",
    "import { atlasClientAssets, atlasRealtime, accessTokenOf, type Authenticate, type TaskRepository } from 'atlas-realtime'",
    "import { AtlasClient, type TaskEvent } from 'atlas-realtime/client'",
    '',
    '// No import of @fastify/websocket here: request.ws comes with atlas-realtime\'s types.',
    'const authenticate: Authenticate = async (request) => {',
    '  const token = accessTokenOf(request)',
    "  const kind: string = request.ws ? 'upgrade' : 'http'",
    "  if (token === undefined) return request.headers['x-api-key'] === 'key' ? { userId: `svc-${kind}`, teams: ['red'] } : null",
    "  return { userId: token, teams: ['red'] }",
    '}',
    'const app = Fastify()',
    "await app.register(atlasRealtime, { authenticate, database: { databasePath: ':memory:' } })",
    "await app.register(atlasClientAssets, { prefix: '/atlas-sdk' })",
    'const repository: TaskRepository = app.taskRepository',
    "const client = new AtlasClient({ baseUrl: 'http://127.0.0.1:3000', token: 'alice', teams: ['red'] })",
    "client.on('event', (event: TaskEvent) => { const seq: number = event.seq; void seq })",
    'export { repository }',
    ''
  ].join('\n') }, { lib: ['ES2022'], types: ['node'] })
  // A browser project's files: DOM, no Node types.
  const clientCheck = typeCheck('client', { 'client-only.ts': clientSource(clientPackage.name), 'client-reexport.ts': clientSource(`${rootPackage.name}/client`) }, { lib: ['ES2022', 'DOM'], types: [] })
  const started = startInstalledApp()

  await t.test('a server app type-checks: atlasRealtime with an authenticate reading request.ws and accessTokenOf', async (t) => {
    const { errors, loaded } = await serverCheck
    t.same(errors, [], 'no type error, in the app or in any declaration it loads')
    t.ok(loaded.some((file) => file.endsWith('/node_modules/atlas-realtime/dist/plugins/index.d.ts')), 'compiled against the installed package')
  })

  await t.test(`client-only files importing only ${clientPackage.name} or ${rootPackage.name}/client type-check with DOM only, loading nothing of the server or Node`, async (t) => {
    const { errors, loaded } = await clientCheck
    t.same(errors, [], 'no type error')
    t.ok(loaded.some((path) => path.endsWith('/node_modules/atlas-realtime-client/dist/client/index.d.ts')), 'compiled against the installed SDK package')
    t.ok(loaded.some((path) => path.endsWith('/node_modules/atlas-realtime/dist/entries/client.d.ts')), 'and through the server package\'s re-export')
    t.same(loaded.filter((path) => /node_modules\/(@types\/|drizzle-orm|fastify|@fastify|better-sqlite3|ioredis)|\/dist\/(lib|plugins)\//.test(path)), [], 'no declaration of the server, its packages or Node was loaded')
  })

  await t.test('the installed server starts, serves the SDK, and the installed SDK receives an event', async (t) => {
    const { stdout, error } = await started
    t.equal(error, undefined, 'the script ran')
    const result = JSON.parse(stdout.trim().split('\n').at(-1) ?? 'null')
    t.same(result, {
      reexportIsSame: true,
      servedSdk: true,
      servedConstants: 200,
      created: 201,
      event: { seq: 1, teamId: 'red', title: true }
    }, 'the SDK served is the installed one; the installed client got the task created over HTTP as event 1')
  })
})
