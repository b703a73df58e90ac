import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createHash, X509Certificate } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import { chromium, type Browser } from 'playwright-core'
import { buildExampleApp } from '../examples/app.js'
import { TEST_SECRET, startInstance, tokenFor } from './helpers/app.js'
import { CHROMIUM_PATH, browserTestProblem, card, waitForState } from './helpers/browser.js'
import { buildProblem } from './helpers/build.js'

// Issue 13, point 3: the example serves HTTPS and WSS with a real certificate, and the Node SDK,
// the Python client and Chromium follow a team over wss:// trusting the CA that signed it, with
// no "ignore certificate errors" anywhere; clients that do not trust the CA are refused (so the
// trust is what lets the others in). The certificate is made here with Debian's openssl.

const ROOT = fileURLToPath(new URL('../', import.meta.url))
// The example as `npm start` runs it: the build (npm test builds first; buildProblem() below
// fails the test when the build is older than the sources).
const SERVER = `${ROOT}dist/examples/server.js`
const SDK_CLIENT = `${ROOT}test/fixtures/wss-sdk-client.ts`
const PY_CLIENT = `${ROOT}examples/python-client/atlas_client.py`
// The SDK's process runs its TypeScript sources through tap's loader (as test/helpers/child-instance.ts).
const TS_LOADER = new URL('../node_modules/@tapjs/typescript/dist/esm/import.mjs', import.meta.url).href
// What test/helpers/browser.ts launches Chromium with (it does not export its list).
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic']

// ------------------------------------------------------------------ a CA and a server certificate

interface Pki {
  dir: string
  /** The CA's certificate: what clients are told to trust. */
  caPath: string
  ca: string
  certPath: string
  keyPath: string
  /** base64 of the SHA-256 of the server key's SubjectPublicKeyInfo (Chromium's pin format). */
  spki: string
}

function makePki (): Pki {
  if (spawnSync('openssl', ['version']).status !== 0) {
    throw new Error('openssl is missing: apt-get install openssl (Debian has it by default; the CI script installs it)')
  }
  const dir = mkdtempSync(join(tmpdir(), 'atlas-wss-'))
  const openssl = (...args: string[]): void => { execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] }) }
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  // A CA (basicConstraints CA:TRUE, may sign certificates) that exists only for this run.
  openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=Atlas WSS test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign')
  // The server's key and a certificate the CA signs for 127.0.0.1 and localhost: clients check the
  // name they connected to against subjectAltName (Chromium ignores the CN).
  openssl('req', '-new', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost')
  writeFileSync(join(dir, 'server.ext'), [
    'subjectAltName=DNS:localhost,IP:127.0.0.1',
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature',
    'extendedKeyUsage=serverAuth',
    'subjectKeyIdentifier=hash',
    'authorityKeyIdentifier=keyid,issuer'
  ].join('\n'))
  openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', '1', '-days', '2', '-extfile', 'server.ext', '-out', 'server.pem')
  const cert = new X509Certificate(readFileSync(join(dir, 'server.pem')))
  const spki = createHash('sha256').update(cert.publicKey.export({ type: 'spki', format: 'der' })).digest('base64')
  return { dir, caPath: join(dir, 'ca.pem'), ca: readFileSync(join(dir, 'ca.pem'), 'utf8'), certPath: join(dir, 'server.pem'), keyPath: join(dir, 'server.key'), spki }
}

// ------------------------------------------------------------------ the example server over TLS

interface Example { port: number, baseUrl: string, stdout: () => string, stderr: () => string }

interface Spawned {
  child: ChildProcess
  exited: Promise<number | null>
  /** The exit code, or 'listening' if it started instead of refusing to (bounded in time). */
  refusal: () => Promise<number | null | 'listening'>
  stdout: () => string
  stderr: () => string
}

function spawnExample (t: Test, env: Record<string, string>): Spawned {
  const stale = buildProblem(['examples', 'plugins', 'lib', 'protocol'])
  if (stale !== undefined) throw new Error(stale)
  const child = spawn(process.execPath, [SERVER], {
    cwd: ROOT,
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1', LOG: 'off', JWT_SECRET: TEST_SECRET, ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let stdout = ''
  let stderr = ''
  child.stdout?.on('data', (chunk: Buffer) => { stdout += chunk.toString() })
  child.stderr?.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  const exited = new Promise<number | null>((resolve) => { child.once('exit', (code) => { resolve(code) }) })
  t.teardown(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
    await exited
    clearTimeout(timer)
  })
  const refusal = async (): Promise<number | null | 'listening'> => await new Promise((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`the example neither exited nor listened in 30 s:\n${stdout}\n${stderr}`)) }, 30_000)
    const onData = (): void => {
      if (!stdout.includes('Atlas Realtime example on')) return
      clearTimeout(timer)
      resolve('listening')
    }
    child.stdout?.on('data', onData)
    void exited.then((code) => { clearTimeout(timer); resolve(code) })
  })
  return { child, exited, refusal, stdout: () => stdout, stderr: () => stderr }
}

/** Starts examples/server.ts with the certificate and waits for the address it prints. */
async function startTlsExample (t: Test, pki: Pki): Promise<Example> {
  const { child, exited, stdout, stderr } = spawnExample(t, { TLS_CERT: pki.certPath, TLS_KEY: pki.keyPath, DATABASE_PATH: join(pki.dir, `atlas-${Date.now()}.db`) })
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`the example did not start in 30 s:\n${stdout()}\n${stderr()}`)) }, 30_000)
    const onData = (): void => {
      const found = /Atlas Realtime example on https:\/\/127\.0\.0\.1:(\d+)/.exec(stdout())
      if (found === null) return
      clearTimeout(timer)
      child.stdout?.off('data', onData)
      resolve(Number(found[1]))
    }
    child.stdout?.on('data', onData)
    exited.then((code) => { clearTimeout(timer); reject(new Error(`the example exited (${code}) before listening:\n${stdout()}\n${stderr()}`)) }, () => {})
  })
  return { port, baseUrl: `https://127.0.0.1:${port}`, stdout, stderr }
}

interface Reply { status: number, headers: Record<string, string | string[] | undefined>, body: string }

/** An HTTPS request from this process that trusts `ca` only (Node's global fetch would not). */
async function tlsRequest (url: string, options: { ca?: string, method?: string, token?: string, body?: unknown } = {}): Promise<Reply> {
  return await new Promise<Reply>((resolve, reject) => {
    const headers: Record<string, string> = {}
    if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`
    if (options.body !== undefined) headers['content-type'] = 'application/json'
    const req = httpsRequest(url, { method: options.method ?? 'GET', headers, ca: options.ca, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => { body += chunk })
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, headers: res.headers, body }) })
    })
    req.on('error', reject)
    req.end(options.body === undefined ? undefined : JSON.stringify(options.body))
  })
}

async function createTask (example: Example, pki: Pki, title: string): Promise<void> {
  const reply = await tlsRequest(`${example.baseUrl}/teams/red/tasks`, { ca: pki.ca, method: 'POST', token: await tokenFor('alice', ['red']), body: { title } })
  if (reply.status !== 201) throw new Error(`POST /teams/red/tasks answered ${reply.status}: ${reply.body}`)
}

// ------------------------------------------------------------------ child processes' output lines

interface Lines { lines: string[], waitFor: (what: string, check: (lines: string[]) => boolean, timeoutMs?: number) => Promise<void>, exited: Promise<number | null> }

function collect (t: Test, child: ChildProcess, stream: 'stdout' | 'stderr' | 'both'): Lines {
  const lines: string[] = []
  const waiters = new Set<() => void>()
  let pending = ''
  const onData = (chunk: Buffer): void => {
    pending += chunk.toString()
    const parts = pending.split('\n')
    pending = parts.pop() ?? ''
    lines.push(...parts.filter((l) => l !== ''))
    for (const check of [...waiters]) check()
  }
  if (stream !== 'stderr') child.stdout?.on('data', onData)
  if (stream !== 'stdout') child.stderr?.on('data', onData)
  const exited = new Promise<number | null>((resolve) => { child.once('exit', (code) => { resolve(code); for (const check of [...waiters]) check() }) })
  t.teardown(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    child.kill('SIGKILL')
    await exited
  })
  const waitFor = async (what: string, check: (lines: string[]) => boolean, timeoutMs = 20_000): Promise<void> => {
    if (check(lines)) return
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { waiters.delete(poll); reject(new Error(`timed out waiting for ${what}; output:\n${lines.join('\n')}`)) }, timeoutMs)
      const poll = (): void => {
        if (!check(lines)) return
        clearTimeout(timer)
        waiters.delete(poll)
        resolve()
      }
      waiters.add(poll)
    })
  }
  return { lines, waitFor, exited }
}

/** The Node SDK in a process of its own; `trustCa`: NODE_EXTRA_CA_CERTS names the test's CA. */
function sdkClient (t: Test, example: Example, token: string, trustCa: boolean): Lines {
  const env: Record<string, string | undefined> = { ...process.env, TS_NODE_TRANSPILE_ONLY: '1', ATLAS_BASE_URL: example.baseUrl, ATLAS_TEAM: 'red', ATLAS_TOKEN: token }
  if (trustCa) env.NODE_EXTRA_CA_CERTS = pki.caPath
  else delete env.NODE_EXTRA_CA_CERTS
  const child = spawn(process.execPath, ['--import', TS_LOADER, SDK_CLIENT], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
  return collect(t, child, 'stdout')
}

function pythonClient (t: Test, example: Example, args: string[]): Lines {
  const child = spawn('python3', [PY_CLIENT, '--url', example.baseUrl, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  return collect(t, child, 'both')
}

// ------------------------------------------------------------------ the tests

const pki = makePki()
t.teardown(() => { rmSync(pki.dir, { recursive: true, force: true }) })

t.test('the example serves HTTPS with HSTS and refuses plain HTTP on its port', async (t) => {
  const example = await startTlsExample(t, pki)
  t.match(example.stdout(), `Atlas Realtime example on https://127.0.0.1:${example.port} `, 'it prints its https:// address')
  t.notMatch(example.stdout(), /http:\/\//, 'and no http:// one')

  const health = await tlsRequest(`${example.baseUrl}/health`, { ca: pki.ca })
  t.equal(health.status, 200, 'GET /health over TLS, trusting the CA')
  t.match(health.headers['strict-transport-security'], /^max-age=\d+; includeSubDomains$/, 'HSTS on a response')
  t.equal(health.headers['strict-transport-security'], 'max-age=31536000; includeSubDomains', 'one year by default')
  const notFound = await tlsRequest(`${example.baseUrl}/no-such-page`, { ca: pki.ca })
  t.equal(notFound.status, 404)
  t.ok(notFound.headers['strict-transport-security'], 'HSTS on an error response too')

  // Without the CA, Node refuses the certificate: the trust above is the CA's, not a bypass.
  await t.rejects(tlsRequest(`${example.baseUrl}/health`), { code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' }, 'a client that does not trust the CA is refused')

  // Plain HTTP to the TLS port: the TLS layer drops the connection, no HTTP response comes.
  const plain = await new Promise<string>((resolve) => {
    const req = httpRequest(`http://127.0.0.1:${example.port}/health`, { agent: false }, (res) => { resolve(`answered ${res.statusCode}`) })
    req.on('error', (err: NodeJS.ErrnoException) => { resolve(`error ${err.code}`) })
    req.end()
  })
  t.match(plain, /^error (ECONNRESET|EPIPE)$/, `plain http:// to the TLS port fails (${plain})`)
})

t.test('HSTS only over HTTPS: not on plain HTTP, and behind a trusted proxy by X-Forwarded-Proto', async (t) => {
  const plain = await startInstance(t, { databasePath: `${t.testdir()}/atlas.db` })
  const response = await fetch(`${plain.baseUrl}/health`)
  t.equal(response.status, 200)
  t.equal(response.headers.get('strict-transport-security'), null, 'no HSTS over plain HTTP')

  // The README's proxy case: with trustProxy, request.protocol and request.host come from the
  // proxy's X-Forwarded-* headers (inject's peer is 127.0.0.1).
  const behind = await buildExampleApp({ databasePath: `${t.testdir()}/proxied.db`, jwtSecret: TEST_SECRET, trustProxy: '127.0.0.1', hstsMaxAgeSeconds: 600 })
  const direct = await buildExampleApp({ databasePath: `${t.testdir()}/direct.db`, jwtSecret: TEST_SECRET })
  t.teardown(async () => { await behind.close(); await direct.close() })
  const forwarded = { 'x-forwarded-proto': 'https', 'x-forwarded-host': 'atlas.example.com' }
  const viaProxy = await behind.inject({ url: '/health', headers: forwarded })
  t.equal(viaProxy.headers['strict-transport-security'], 'max-age=600; includeSubDomains', 'HSTS when a trusted proxy says https')
  const untrusted = await direct.inject({ url: '/health', headers: forwarded })
  t.equal(untrusted.headers['strict-transport-security'], undefined, 'X-Forwarded-Proto from a peer that is not trusted is ignored')

  // The Origin check compares the Origin's host with request.host: the public host the proxy
  // forwards, with trustProxy; the proxy's own Host without it.
  const upgrade = { ...forwarded, host: '10.0.0.5:3000', origin: 'https://atlas.example.com', connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' }
  const accepted = await behind.inject({ url: '/realtime', headers: upgrade })
  t.equal(accepted.statusCode, 401, 'behind a trusted proxy the public origin passes the Origin check (then no credential: 401)')
  const refused = await direct.inject({ url: '/realtime', headers: upgrade })
  t.equal(refused.statusCode, 403, 'without trustProxy the same request is a foreign origin')
  t.equal(refused.json().code, 'FORBIDDEN_ORIGIN')
})

t.test('the example refuses to start with half a TLS configuration or a file it cannot read', async (t) => {
  const onlyCert = spawnExample(t, { TLS_CERT: pki.certPath, DATABASE_PATH: join(pki.dir, 'unused-1.db') })
  const onlyKey = spawnExample(t, { TLS_KEY: pki.keyPath, DATABASE_PATH: join(pki.dir, 'unused-2.db') })
  const missing = spawnExample(t, { TLS_CERT: join(pki.dir, 'nope.pem'), TLS_KEY: pki.keyPath, DATABASE_PATH: join(pki.dir, 'unused-3.db') })
  const mismatch = spawnExample(t, { TLS_CERT: pki.certPath, TLS_KEY: join(pki.dir, 'ca.key'), DATABASE_PATH: join(pki.dir, 'unused-4.db') })
  t.equal(await onlyCert.refusal(), 1, 'TLS_CERT without TLS_KEY: exits')
  t.match(onlyCert.stderr(), /TLS_CERT and TLS_KEY go together .* only TLS_CERT is set/, 'and says what is missing')
  t.equal(await onlyKey.refusal(), 1, 'TLS_KEY without TLS_CERT: exits')
  t.match(onlyKey.stderr(), /only TLS_KEY is set/)
  t.equal(await missing.refusal(), 1, 'an unreadable TLS_CERT: exits')
  t.match(missing.stderr(), `TLS_CERT: cannot read ${join(pki.dir, 'nope.pem')}: ENOENT`, 'naming the variable and the file')
  t.equal(await mismatch.refusal(), 1, 'a key that is not the certificate\'s: exits')
  t.match(mismatch.stderr(), /are not a PEM certificate and its private key: .*key values mismatch/, 'saying the two do not fit')
  t.notOk([1, 2, 3, 4].some((n) => existsSync(join(pki.dir, `unused-${n}.db`))), 'before opening the database')
})

t.test('over wss:// trusting the CA: the Node SDK, the Python client and Chromium get live events', async (t) => {
  const problem = browserTestProblem()
  if (problem !== undefined) throw new Error(problem)
  const example = await startTlsExample(t, pki)

  // (a) The Node SDK, trusting the CA by NODE_EXTRA_CA_CERTS: the way to trust a private CA in any
  // Node process, with no code (the ws package and fetch both use Node's CA list). Passing `ca` to
  // a ws subclass and an undici Agent to fetch would work too, but would need undici as a dependency.
  const sdk = sdkClient(t, example, await tokenFor('pat', ['red']), true)
  await sdk.waitFor('the SDK to load team red', (lines) => lines.some((l) => l.includes('"snapshot"')))
  t.match(sdk.lines[0], /"probe":"ok"/, 'the SDK process\'s fetch trusts the CA')

  // (b) The Python client with --cafile (an ssl context trusting that file only).
  const py = pythonClient(t, example, ['--cafile', pki.caPath, '--token', await tokenFor('quinn', ['red']), '--teams', 'red', '--max-events', '1', '--timeout', '60', '--json'])
  await py.waitFor('the Python client to load team red', (lines) => lines.some((l) => l.includes('ready team=red')))
  t.ok(py.lines.some((l) => l.includes(`connecting wss://127.0.0.1:${example.port}/realtime?teams=red`)), 'the Python client connects to wss://')

  // (c) Chromium loads the board over https:// and its SDK opens wss://. It trusts exactly the
  // server's key: --ignore-certificate-errors-spki-list pins the SHA-256 of its SubjectPublicKeyInfo,
  // so any other certificate is still refused. Trusting the CA itself would take an NSS database
  // (certutil from libnss3-tools, which this machine lacks) in the profile's HOME; the pin needs
  // nothing installed and is no blanket --ignore-certificate-errors.
  const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: [...CHROMIUM_ARGS, `--ignore-certificate-errors-spki-list=${pki.spki}`] })
  t.teardown(async () => { await browser.close() })
  const context = await browser.newContext()
  t.teardown(async () => { await context.close() })
  const page = await context.newPage()
  const sockets: string[] = []
  const pageErrors: string[] = []
  page.on('websocket', (ws) => { sockets.push(ws.url()) })
  page.on('pageerror', (err) => pageErrors.push(err.message))
  const response = await page.goto(`https://localhost:${example.port}/#token=${await tokenFor('alice', ['red'])}`)
  t.equal(response?.status(), 200, 'the page loads over https://localhost')
  t.match(response?.headers()['strict-transport-security'], /^max-age=\d+; includeSubDomains$/, 'with HSTS')
  await waitForState(page, 'open')
  t.same(await page.evaluate(() => [location.protocol, window.isSecureContext]), ['https:', true], 'a secure context')
  t.ok(sockets.length > 0 && sockets.every((url) => url.startsWith(`wss://localhost:${example.port}/realtime`)), `the page's socket is wss:// (${sockets.join(', ')})`)

  // One event for all three.
  await createTask(example, pki, 'over TLS')
  await card(page, 'over TLS').waitFor({ timeout: 15_000 })
  t.pass('Chromium shows the new task, live')
  await sdk.waitFor('the SDK to get the event', (lines) => lines.some((l) => l.includes('"event"')))
  const event = JSON.parse(sdk.lines.find((l) => l.includes('"event"')) ?? '{}') as { event?: unknown }
  t.same(event.event, { type: 'task.created', teamId: 'red', seq: 1, title: 'over TLS' }, 'the Node SDK gets the event over wss://')
  t.equal(await py.exited, 0, 'the Python client got its event and exited 0')
  const pyEvent = JSON.parse(py.lines.find((l) => l.startsWith('{')) ?? '{}') as { type?: string, seq?: number, teamId?: string }
  t.same([pyEvent.type, pyEvent.teamId, pyEvent.seq], ['task.created', 'red', 1], 'the Python client gets the event over wss://')
  t.same(pageErrors, [], 'no uncaught errors on the page')
})

t.test('clients that do not trust the CA are refused', async (t) => {
  const example = await startTlsExample(t, pki)

  // The same SDK process without NODE_EXTRA_CA_CERTS: its fetch and its sockets fail the
  // certificate check, so it never gets a welcome and stops after its two attempts.
  const sdk = sdkClient(t, example, await tokenFor('pat', ['red']), false)
  await sdk.waitFor('the SDK to stop', (lines) => lines.some((l) => l.includes('"stopped"')))
  t.match(JSON.parse(sdk.lines[0]), { probe: 'error', code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' }, 'fetch: the certificate is not trusted')
  t.notOk(sdk.lines.some((l) => l.includes('"snapshot"') || l.includes('"event"')), 'no list, no event')
  t.ok(sdk.lines.some((l) => l.includes('"stopped":"retries_exhausted"')), 'the SDK gives up: its sockets never opened')

  // The Python client without --cafile: the system's CAs do not include the test's, and a
  // certificate that does not verify is fatal.
  const py = pythonClient(t, example, ['--token', await tokenFor('quinn', ['red']), '--teams', 'red', '--max-events', '1', '--timeout', '30', '--json'])
  t.equal(await py.exited, 1, 'the Python client exits 1 at once')
  t.ok(py.lines.some((l) => l.includes('fatal: TLS:') && l.includes('certificate') && l.includes('--cafile')), `and says why (${py.lines.at(-1) ?? ''})`)

  // Chromium without the pin: the page does not load.
  const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_ARGS })
  t.teardown(async () => { await browser.close() })
  const context = await browser.newContext()
  t.teardown(async () => { await context.close() })
  const page = await context.newPage()
  await t.rejects(page.goto(`https://localhost:${example.port}/`), /ERR_CERT_AUTHORITY_INVALID/, 'Chromium refuses the certificate')
})
