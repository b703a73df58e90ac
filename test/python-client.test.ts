import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createServer, type AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { startInstance, tokenFor } from './helpers/app.js'

// The Python client (examples/python-client) is written from docs/protocol.md alone; this test
// runs it against the example app to prove the document is enough to build a correct client.

const CLIENT = fileURLToPath(new URL('../examples/python-client/atlas_client.py', import.meta.url))

interface PyEvent { recv_ms: number, teamId: string, seq: number, type: string, taskId: string }

/** The Python client as a child process: its stdout events and stderr log lines, as they come. */
function spawnClient (t: { teardown (fn: () => unknown): void }, args: string[]): {
  child: ChildProcess
  events: PyEvent[]
  log: string[]
  exited: Promise<number | null>
  waitFor: (what: string, check: () => boolean, timeoutMs?: number) => Promise<void>
} {
  const child = spawn('python3', [CLIENT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  const events: PyEvent[] = []
  const log: string[] = []
  const waiters = new Set<() => void>()
  const notify = (): void => { for (const check of [...waiters]) check() }
  const lines = (stream: NodeJS.ReadableStream, onLine: (line: string) => void): void => {
    let pending = ''
    stream.on('data', (chunk: Buffer) => {
      pending += chunk.toString()
      const parts = pending.split('\n')
      pending = parts.pop() ?? ''
      for (const line of parts) if (line !== '') onLine(line)
      notify()
    })
  }
  lines(child.stdout!, (line) => { events.push(JSON.parse(line) as PyEvent) })
  lines(child.stderr!, (line) => { log.push(line) })
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => { resolve(code); notify() })
  })
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await exited
    }
  })
  const waitFor = async (what: string, check: () => boolean, timeoutMs = 15_000): Promise<void> => {
    if (check()) return
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        waiters.delete(poll)
        reject(new Error(`timed out waiting for ${what}\nstdout: ${JSON.stringify(events)}\nstderr:\n${log.join('\n')}`))
      }, timeoutMs)
      const poll = (): void => {
        if (!check()) return
        clearTimeout(timer)
        waiters.delete(poll)
        resolve()
      }
      waiters.add(poll)
    })
  }
  return { child, events, log, exited, waitFor }
}

function percentile (sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]
}

t.test('the Python client built from docs/protocol.md follows, filters and resumes a team', async (t) => {
  const dir = t.testdir()
  const instance = await startInstance(t, { databasePath: `${dir}/atlas.db` })
  const pat = await tokenFor('pat', ['red'])
  const alice = await tokenFor('alice', ['red'])
  const carol = await tokenFor('carol', ['blue'])
  const TOTAL = 10

  const py = spawnClient(t, ['--url', instance.baseUrl, '--token', pat, '--teams', 'red', '--max-events', String(TOTAL), '--timeout', '60', '--json'])
  await py.waitFor('the Python client to load team red', () => py.log.some((l) => l.includes('ready team=red last=0')))

  // What the test expects, in seq order, with the time each HTTP response arrived.
  const expected: Array<{ seq: number, type: string, taskId: string, sentMs: number }> = []
  const mutate = async (method: string, path: string, token: string, type: string, body?: unknown): Promise<string> => {
    const headers: Record<string, string> = { authorization: `Bearer ${token}` }
    if (body !== undefined) headers['content-type'] = 'application/json'
    const res = await fetch(instance.baseUrl + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
    const sentMs = performance.timeOrigin + performance.now() // the response head has arrived
    const text = await res.text()
    t.ok(res.status >= 200 && res.status < 300, `${method} ${path} answered ${res.status}`)
    const taskId = text === '' ? path.split('/').at(-1) ?? '' : (JSON.parse(text) as { id: string }).id
    if (path.startsWith('/teams/red/')) expected.push({ seq: expected.length + 1, type, taskId, sentMs })
    return taskId
  }

  // Warm the test's HTTP client up (first fetch is slow) so latencies measure delivery.
  for (const token of [alice, carol]) await fetch(`${instance.baseUrl}/teams/${token === alice ? 'red' : 'blue'}/tasks`, { headers: { authorization: `Bearer ${token}` } }).then(async (r) => await r.text())

  // Phase 1: live events of red; a blue event in the middle must not reach the client.
  const a = await mutate('POST', '/teams/red/tasks', alice, 'task.created', { title: 'a' })
  await mutate('PATCH', `/teams/red/tasks/${a}`, alice, 'task.updated', { status: 'in_progress' })
  const b = await mutate('POST', '/teams/red/tasks', alice, 'task.created', { title: 'b' })
  await mutate('POST', '/teams/blue/tasks', carol, 'task.created', { title: 'blue secret' })
  await mutate('DELETE', `/teams/red/tasks/${b}`, alice, 'task.deleted')
  // seq 4 of red was committed after the blue event: once it has arrived, the blue one would have too.
  await py.waitFor('red events 1..4', () => py.events.length >= 4)
  t.same(py.events.map((e) => e.seq), [1, 2, 3, 4], 'red seqs 1..4 in order')
  t.same(py.events.map((e) => [e.teamId, e.type, e.taskId]), expected.map((e) => ['red', e.type, e.taskId]), 'types and task ids of red events')
  t.notOk(py.events.some((e) => e.teamId !== 'red'), 'no blue event on stdout')
  t.notOk(py.log.some((l) => l.includes('unexpected event')), 'no event of another team reached the socket')

  // The WebSocket layer: a server protocol ping is answered with a pong carrying its payload, and
  // a 100 KB frame (64-bit length) of an unknown type is read and ignored.
  const [server] = instance.app.websocketServer.clients
  t.equal(server.protocol, 'atlas.v1', 'the client offered atlas.v1 and the server selected it')
  const pong = new Promise<string>((resolve) => { server.once('pong', (data: Buffer) => { resolve(data.toString()) }) })
  server.send(JSON.stringify({ type: 'x-test-unknown', pad: 'x'.repeat(100_000) }))
  server.ping('probe-1')
  t.equal(await pong, 'probe-1', 'the client answers a protocol ping with a pong')

  // Phase 2: cut the connection from the server side, mutate while it is down, expect a resume.
  const terminated = instance.app.websocketServer.clients.size
  for (const ws of instance.app.websocketServer.clients) ws.terminate()
  t.equal(terminated, 1, 'one server socket (the Python client) was cut')
  const c = await mutate('POST', '/teams/red/tasks', alice, 'task.created', { title: 'c' })
  await mutate('PATCH', `/teams/red/tasks/${a}`, alice, 'task.updated', { title: 'a2', status: 'done' })
  await mutate('PATCH', `/teams/red/tasks/${c}`, alice, 'task.updated', { assignee: 'pat' })
  await mutate('DELETE', `/teams/red/tasks/${a}`, alice, 'task.deleted')
  await py.waitFor('red events 5..8', () => py.events.length >= 8)

  // Phase 3: a close frame with 4008 (slow consumer): reconnect and resume with since=red:8.
  for (const ws of instance.app.websocketServer.clients) ws.close(4008, 'slow consumer: reconnect and resume')
  await mutate('PATCH', `/teams/red/tasks/${c}`, alice, 'task.updated', { description: 'd'.repeat(5000) })
  await mutate('DELETE', `/teams/red/tasks/${c}`, alice, 'task.deleted')
  t.equal(expected.length, TOTAL)

  await py.waitFor(`all ${TOTAL} red events`, () => py.events.length >= TOTAL)
  t.equal(await py.exited, 0, 'the client exits 0 after --max-events')
  t.same(py.events.map((e) => e.seq), Array.from({ length: TOTAL }, (_, i) => i + 1), 'every seq exactly once, in order, across the cut')
  t.same(py.events.map((e) => [e.teamId, e.type, e.taskId]), expected.map((e) => ['red', e.type, e.taskId]), 'types and task ids across the cut')
  t.ok(py.log.some((l) => l.includes('connection ended: 1006')), 'the client saw the drop')
  t.ok(py.log.some((l) => l.includes('since=red:4')), 'the client resumed with since=red:4')
  t.ok(py.log.some((l) => l.includes('connection ended: 4008')), 'the client saw the 4008 close')
  t.ok(py.log.some((l) => l.includes('since=red:8')), 'the client resumed with since=red:8')
  t.comment(`connections: ${py.log.filter((l) => l.includes('] connecting')).map((l) => l.replace(/^.*realtime/, '')).join(' | ')}`)

  const latencies = py.events.map((e, i) => e.recv_ms - expected[i].sentMs)
  const sorted = [...latencies].sort((x, y) => x - y)
  t.comment(`latency (python recv_ms - HTTP response in test), ms: ${latencies.map((l) => l.toFixed(1)).join(', ')}`)
  // Negative values: the event reached Python before the HTTP response reached the test.
  // Seqs 5-10 were made while the client was away: their latency includes its reconnect backoff.
  t.comment(`latency live (seqs 1-4) p50 ${percentile([...latencies.slice(0, 4)].sort((x, y) => x - y), 0.5).toFixed(1)} ms; all p50 ${percentile(sorted, 0.5).toFixed(1)} ms, max ${sorted.at(-1)?.toFixed(1)} ms`)
})

t.test('the Python client stops on a refused upgrade and is bounded in time', async (t) => {
  const dir = t.testdir()
  const instance = await startInstance(t, { databasePath: `${dir}/atlas.db` })
  const refused = spawnClient(t, ['--url', instance.baseUrl, '--token', 'not-a-jwt', '--json', '--timeout', '20'])
  // It offers atlas.v1, so the server tells the refusals by close code after the handshake.
  t.equal(await refused.exited, 1, 'a refused credential (4001) is fatal (no reconnect loop)')
  t.ok(refused.log.some((l) => l.includes('fatal: closed 4001 unauthorized:')), 'the 4001 and its reason are reported')
  const forbidden = spawnClient(t, ['--url', instance.baseUrl, '--token', await tokenFor('carol', ['blue']), '--teams', 'red', '--json', '--timeout', '20'])
  t.equal(await forbidden.exited, 1, 'a refused team (4003) is fatal')
  t.ok(forbidden.log.some((l) => l.includes('fatal: closed 4003 forbidden_team: red')), 'the 4003 and the team are reported')
  const idle = spawnClient(t, ['--url', instance.baseUrl, '--token', await tokenFor('dave', ['red', 'blue']), '--max-events', '1', '--timeout', '1.5', '--json'])
  t.equal(await idle.exited, 2, '--timeout ends a client that did not get its events, with status 2')
  t.ok(idle.log.some((l) => l.includes('ready team=red')) && idle.log.some((l) => l.includes('ready team=blue')), 'without --teams, all teams of the welcome are loaded')
})

t.test('the Python client loads a list of several pages', async (t) => {
  const instance = await startInstance(t, { databasePath: `${t.testdir()}/atlas.db`, realtime: { routes: { pageSize: 3, maxPageSize: 3 } } })
  const alice = await tokenFor('alice', ['red'])
  const post = async (title: string): Promise<void> => {
    const response = await fetch(`${instance.baseUrl}/teams/red/tasks`, { method: 'POST', headers: { authorization: `Bearer ${alice}`, 'content-type': 'application/json' }, body: JSON.stringify({ title }) })
    t.equal(response.status, 201)
  }
  for (let i = 0; i < 8; i++) await post(`task ${i}`)
  const py = spawnClient(t, ['--url', instance.baseUrl, '--token', alice, '--teams', 'red', '--max-events', '2', '--timeout', '30', '--json'])
  await py.waitFor('the Python client to load team red', () => py.log.some((l) => l.includes('ready team=red')))
  t.ok(py.log.some((l) => l.includes('list of red: 8 tasks in 3 pages')), 'three pages followed')
  t.ok(py.log.some((l) => l.includes('ready team=red last=8 tasks=8')), 'all 8 tasks, as of the first page\'s seq')
  await post('live 1')
  await post('live 2')
  t.equal(await py.exited, 0)
  t.same(py.events.map((e) => e.seq), [9, 10], 'then the events after it')
})

t.test('the Python client sends its token in the Authorization header and offers atlas.v1, never in the URL', async (t) => {
  // A bare TCP listener in the server's place: what the client writes is the upgrade as sent.
  const heads: string[] = []
  const listener = createServer((socket) => {
    let head = ''
    socket.on('data', (chunk: Buffer) => {
      head += chunk.toString('latin1')
      if (!head.includes('\r\n\r\n')) return
      heads.push(head.split('\r\n\r\n')[0])
      socket.end('HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n')
    })
  })
  listener.listen(0, '127.0.0.1')
  await once(listener, 'listening')
  t.teardown(() => { listener.close() })
  const base = `http://127.0.0.1:${(listener.address() as AddressInfo).port}`
  const token = await tokenFor('pat', ['red'])
  const py = spawnClient(t, ['--url', base, '--token', token, '--teams', 'red', '--timeout', '10', '--json'])
  await py.waitFor('the upgrade request', () => heads.length >= 1)
  py.child.kill('SIGKILL')
  const [requestLine, ...headerLines] = heads[0].split('\r\n')
  const headers = new Map(headerLines.map((line) => [line.slice(0, line.indexOf(':')).toLowerCase(), line.slice(line.indexOf(':') + 1).trim()]))
  t.equal(requestLine, 'GET /realtime?teams=red HTTP/1.1', 'no credential in the request line')
  t.equal(headers.get('authorization'), `Bearer ${token}`, 'the token in the Authorization header')
  t.equal(headers.get('sec-websocket-protocol'), 'atlas.v1', 'atlas.v1 offered, and no credential entry beside it')
  t.equal(headers.get('host'), base.slice('http://'.length), 'Host names the port')
  t.notOk(py.log.some((l) => l.includes(token)), 'the token is never logged')
})
