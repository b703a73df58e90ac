/**
 * `npm run bench:abuse`: the abuse rows of issue #10's "Limits" table, measured against the
 * example server (dist/examples/server.js) with its default limits and the in-process broker,
 * each probe as one user with one token, bounded in count and time, on 127.0.0.1 only.
 *
 * The teams of 5,000 and 20,000 tasks are written first by a setup server on the same SQLite
 * file started with MAX_MUTATIONS_PER_USER raised (25,000 creations take 40 minutes at the
 * default 600 a minute); it is stopped before the measured server starts on that file, so no
 * probe meets a raised limit. The failed-authentication probe blocks 127.0.0.1 for a minute, so
 * it runs last; the shutdown probe has a server of its own.
 */
import type { ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import { Agent, request, type IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'
import { signToken } from '../examples/jwt-auth.js'
import { latencyHistogram } from './histogram.js'
import { freePort, killAllNow, sleep, spawnTracked, stopAll, stopChild, waitForHttp } from './processes.js'
import { sampleProcess } from './procstat.js'
import { writeResults } from './report.js'

const SERVER = fileURLToPath(new URL('../examples/server.js', import.meta.url))
const SECRET = randomBytes(32).toString('hex')
const REPLAY_TEAM_EVENTS = 5000
const LIST_TEAM_TASKS = 20_000
const agent = new Agent({ keepAlive: true, maxSockets: 64 })

/** The issue's rows, in its order, with its figures measured before the limits. */
const ROWS = [
  ['10,000 `ping` frames on one socket', 'all answered in 249 ms; another client\'s event p99 rose to 247 ms'],
  ['200 subscribe frames × 100 foreign teams', '20,000 `forbidden_team` error frames, socket stays open'],
  ['1,000 subscribe(since 0)/unsubscribe cycles on a team of 5,000 events', '2.2 GB sent for 122 KB received (×18,000), 19 s of server CPU in 19.6 s'],
  ['500 sockets from one user', 'all accepted'],
  ['2,000 task creations as fast as possible', '1,510/s, no 429'],
  ['300 bad tokens in a row', '300 × 401 in 0.4 s, no throttling'],
  ['list of a team with 20,000 tasks', '5.2 MB in one response, 377 ms'],
  ['SIGTERM with a client that never answers the close frame', 'exit after 30.1 s']
] as const

interface Outcome { now: string, data: Record<string, unknown> }
interface Frame { type: string, code?: string, reason?: string, task?: { title?: string } }
interface Client { ws: WebSocket, tcp: Socket | null, closed: Promise<number> }
interface Refusal { status: number, retryAfter?: string }
interface Reply { status: number, body: string, ms: number }

const int = (n: number): string => Math.round(n).toLocaleString('en-US')
const ms = (n: number): string => (n >= 10 ? n.toFixed(0) : n.toFixed(1))
const bytes = (n: number): string => (n >= 1048576 ? `${(n / 1048576).toFixed(1)} MB` : `${(n / 1024).toFixed(1)} KB`)
const token = async (user: string, teams: string[]): Promise<string> => await signToken(SECRET, user, teams)
const wsUrl = (port: number, jwt: string, query = ''): string => `ws://127.0.0.1:${port}/realtime?access_token=${jwt}${query}`

const tally = (values: ReadonlyArray<string | number>): Record<string, number> => values.reduce<Record<string, number>>((t, v) => { t[v] = (t[v] ?? 0) + 1; return t }, {})
const showTally = (t: Record<string, number>): string => Object.entries(t).map(([k, n]) => `${int(n)} × ${k}`).join(', ')

/** Polls `done` every 5 ms; fails after `limitMs`. */
async function until (what: string, limitMs: number, done: () => boolean): Promise<void> {
  const deadline = performance.now() + limitMs
  while (!done()) {
    if (performance.now() > deadline) throw new Error(`abuse: ${what} took over ${limitMs} ms`)
    await sleep(5)
  }
}

async function within<T> (what: string, limitMs: number, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`abuse: ${what} took over ${limitMs} ms`)) }, limitMs) })
  try { return await Promise.race([promise, timeout]) } finally { clearTimeout(timer) }
}

/** Runs `task(0 … count-1)` with at most `concurrency` in flight; resolves with the seconds taken. */
async function pool (count: number, concurrency: number, task: (i: number) => Promise<void>): Promise<number> {
  const start = performance.now()
  let next = 0
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, async () => { while (next < count) await task(next++) }))
  return (performance.now() - start) / 1000
}

type Server = ChildProcess & { port: number }

/** The example server; the environment is the shell's minus any MAX_*, REDIS_URL or origin setting, plus `env`. */
async function startServer (databasePath: string, env: Record<string, string> = {}): Promise<Server> {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MAX_') && k !== 'REDIS_URL' && k !== 'ALLOWED_ORIGINS'))
  const port = await freePort()
  const child = spawnTracked(process.execPath, [SERVER], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...inherited, PORT: String(port), HOST: '127.0.0.1', DATABASE_PATH: databasePath, JWT_SECRET: SECRET, LOG: 'off', ...env } })
  child.stderr?.on('data', (chunk: Buffer) => { process.stderr.write(`[server ${port}] ${chunk.toString()}`) })
  await waitForHttp(port, '/health', child)
  return Object.assign(child, { port })
}

async function http (port: number, method: string, path: string, jwt: string, body?: unknown): Promise<Reply> {
  const start = performance.now()
  const payload = body === undefined ? undefined : JSON.stringify(body)
  const headers = { authorization: `Bearer ${jwt}`, ...(payload === undefined ? {} : { 'content-type': 'application/json' }) }
  return await new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, agent, headers, timeout: 30_000 }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => { chunks.push(chunk) })
      res.once('end', () => { resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString(), ms: performance.now() - start }) })
    })
    req.once('timeout', () => { req.destroy(new Error(`abuse: ${method} ${path} not answered in 30 s`)) })
    req.once('error', reject)
    req.end(payload)
  })
}

/** Opens a socket with `ws`: the client, or the refused upgrade's status (0: no HTTP answer). */
async function open (url: string, onFrame: (data: Buffer) => void = () => {}): Promise<Client | Refusal> {
  const ws = new WebSocket(url)
  let tcp: Socket | null = null
  ws.on('upgrade', (res: IncomingMessage) => { tcp = res.socket })
  ws.on('message', (data) => { onFrame(data as Buffer) })
  ws.on('error', () => {})
  const closed = new Promise<number>((resolve) => { ws.once('close', (code) => { resolve(code) }) })
  return await new Promise((resolve) => {
    ws.once('open', () => { resolve({ ws, tcp, closed }) })
    ws.once('unexpected-response', (req, res) => {
      resolve({ status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'] })
      req.destroy()
    })
    ws.once('error', () => { resolve({ status: 0 }) })
  })
}
const opened = (c: Client | Refusal): Client => { if ('ws' in c) return c; throw new Error(`abuse: upgrade refused with ${c.status}`) }

/** A control frame parsed; null for a task event, counted but not parsed (a replay holds thousands). */
function control (data: Buffer): Frame | null {
  return data.toString('latin1', 0, 14) === '{"type":"task.' ? null : JSON.parse(data.toString()) as Frame
}

/** Sends `frame` `count` times, a chunk per turn of the event loop so the bench's own clock stays honest; stops when the socket closes. */
async function flood (ws: WebSocket, count: number, frame: (i: number) => string): Promise<number> {
  let sent = 0
  while (sent < count && ws.readyState === WebSocket.OPEN) {
    for (const end = Math.min(count, sent + 500); sent < end; sent++) ws.send(frame(sent))
    await new Promise((resolve) => setImmediate(resolve))
  }
  return sent
}

function percentiles (samplesMs: number[]): { p50: number, p99: number, n: number } {
  const h = latencyHistogram()
  for (const s of samplesMs) h.recordValue(s * 1000)
  return { p50: h.getValueAtPercentile(50) / 1000, p99: h.getValueAtPercentile(99) / 1000, n: samplesMs.length }
}

async function pingFlood (port: number): Promise<Outcome> {
  const sentAt: number[] = []
  const latencies: Array<{ sent: number, ms: number }> = []
  let subscribed = (): void => {}
  const ready = new Promise<void>((resolve) => { subscribed = resolve })
  const witness = opened(await open(wsUrl(port, await token('witness', ['red']), '&teams=red'), (data) => {
    const f = JSON.parse(data.toString()) as Frame
    if (f.type === 'subscribed') subscribed()
    const sent = sentAt[Number(/^w(\d+)$/.exec(f.task?.title ?? '')?.[1] ?? -1)]
    if (f.type === 'task.created' && sent !== undefined) latencies.push({ sent, ms: performance.now() - sent })
  }))
  await within('witness subscription', 5000, ready)
  const answers: string[] = []
  const flooder = opened(await open(wsUrl(port, await token('flooder', ['red'])), (data) => { const f = control(data); if (f?.type === 'pong' || f?.type === 'error') answers.push(f.code ?? f.type) }))
  // The stream: 50 creations a second by a third user, 2.5 s alone, then through the flood.
  const writer = await token('writer', ['red'])
  const writes: Array<Promise<Reply>> = []
  const start = performance.now()
  const timer = setInterval(() => { sentAt.push(performance.now()); writes.push(http(port, 'POST', '/teams/red/tasks', writer, { title: `w${sentAt.length - 1}` })) }, 20)
  await sleep(2500)
  const floodStart = performance.now()
  const sent = await flood(flooder.ws, 10_000, (i) => `{"type":"ping","id":${i}}`)
  let code = null as number | null
  void flooder.closed.then((c) => { code = c })
  await until('ping flood', 20_000, () => code !== null || answers.length >= sent)
  const floodMs = performance.now() - floodStart
  const windowEnd = floodStart + Math.max(floodMs, 1000)
  await sleep(windowEnd - performance.now())
  clearInterval(timer)
  const statuses = tally((await Promise.all(writes)).map((r) => r.status))
  await until('the stream\'s last events', 10_000, () => latencies.length >= (statuses[201] ?? 0))
  witness.ws.close()
  flooder.ws.close()
  const quiet = percentiles(latencies.filter((l) => l.sent >= start + 500 && l.sent < floodStart).map((l) => l.ms))
  const during = percentiles(latencies.filter((l) => l.sent >= floodStart && l.sent < windowEnd).map((l) => l.ms))
  const counts = tally(answers)
  return {
    now: `${int(counts.pong ?? 0)} pongs, ${int(counts.rate_limited ?? 0)} \`rate_limited\`, ${code === null ? 'socket open' : `closed ${code}`} after ${ms(floodMs)} ms (${int(sent)} sent); another client's event p50/p99 ${ms(during.p50)}/${ms(during.p99)} ms during it (p99 ${ms(quiet.p99)} ms without)`,
    data: { framesSent: sent, answers: counts, closeCode: code, floodMs, witnessDuringFlood: during, witnessWithoutFlood: quiet, witnessWindowMs: windowEnd - floodStart, writes: statuses }
  }
}

async function foreignSubscribes (port: number): Promise<Outcome> {
  const errors: string[] = []
  const client = opened(await open(wsUrl(port, await token('prober', ['red']), '&teams='), (data) => { const f = control(data); if (f?.type === 'error') errors.push(f.code ?? '?') }))
  const frame = JSON.stringify({ type: 'subscribe', teams: Array.from({ length: 100 }, (_, i) => `foreign${i}`) })
  const start = performance.now()
  const sent = await flood(client.ws, 200, () => frame)
  const code = await Promise.race([client.closed, sleep(5000).then(() => null)])
  client.ws.close()
  const counts = tally(errors)
  return {
    now: `${showTally(counts)} error frames, ${code === null ? 'socket still open after 5 s' : `closed ${code}`} (${sent} frames sent)`,
    data: { framesSent: sent, errors: counts, closeCode: code, ms: performance.now() - start }
  }
}

/** Cycles on one socket as fast as answers come; a closed socket is opened again, as an attacker would. */
async function replayCycles (port: number, pid: number): Promise<Outcome> {
  const jwt = await token('replayer', ['replay'])
  const subscribe = JSON.stringify({ type: 'subscribe', teams: ['replay'], since: { replay: 0 } })
  const unsubscribe = JSON.stringify({ type: 'unsubscribe', teams: ['replay'] })
  const answers: string[] = []
  const closes: number[] = []
  let received = 0; let sent = 0; let connections = 0; let cycles = 0
  let first = { cycles: 0, bytes: 0 }
  const before = sampleProcess(pid)
  const start = performance.now()
  const deadline = start + 45_000
  while (cycles < 1000 && performance.now() < deadline) {
    let client: Client | undefined
    const conn = await open(wsUrl(port, jwt, '&teams='), (data) => {
      const f = control(data)
      if (f === null || client === undefined) return
      if (f.type === 'subscribed' || f.type === 'resync') {
        answers.push(f.type === 'resync' ? `resync ${f.reason ?? '?'}` : 'subscribed (full replay)')
        if (++cycles >= 1000 || performance.now() > deadline) { client.ws.close(); return }
        client.ws.send(unsubscribe)
      } else if (f.type === 'error') answers.push(`error ${f.code ?? '?'}`)
      else return
      client.ws.send(subscribe)
    })
    if (!('ws' in conn)) { closes.push(conn.status); break }
    client = conn
    connections++
    conn.ws.send(subscribe)
    closes.push(await within('a replay connection', 60_000, conn.closed))
    received += conn.tcp?.bytesRead ?? 0
    sent += conn.tcp?.bytesWritten ?? 0
    if (connections === 1) first = { cycles, bytes: received }
  }
  const wall = (performance.now() - start) / 1000
  const cpu = (sampleProcess(pid).cpuMicros - before.cpuMicros) / 1e6
  const counts = tally(answers)
  return {
    now: `${int(cycles)} cycles over ${connections} connections (closes: ${showTally(tally(closes))}; the first alone ${first.cycles} cycles, ${bytes(first.bytes)}): server sent ${bytes(received)} for ${bytes(sent)} received (×${int(received / Math.max(1, sent))}); ${int(counts['subscribed (full replay)'] ?? 0)} full replays, ${int(counts['resync replay_limited'] ?? 0)} × \`resync\` \`replay_limited\`, ${int(counts['error rate_limited'] ?? 0)} × \`rate_limited\`; ${cpu.toFixed(1)} s of server CPU in ${wall.toFixed(1)} s`,
    data: { cycles, connections, firstConnection: first, answers: counts, closeCodes: tally(closes), serverToClientBytes: received, clientToServerBytes: sent, serverCpuSeconds: cpu, wallSeconds: wall }
  }
}

async function manySockets (port: number): Promise<Outcome> {
  const jwt = await token('hoarder', ['red'])
  const outcomes: Array<Client | Refusal> = []
  const seconds = await pool(500, 25, async () => { outcomes.push(await open(wsUrl(port, jwt, '&teams='))) })
  const accepted = outcomes.filter((o): o is Client => 'ws' in o)
  const refused = outcomes.filter((o): o is Refusal => !('ws' in o))
  const statuses = tally(refused.map((r) => r.status))
  await within('closing the sockets', 10_000, Promise.all(accepted.map(async (c) => { c.ws.close(); await c.closed })))
  return {
    now: `${accepted.length} accepted, ${showTally(statuses)} refused (Retry-After ${refused[0]?.retryAfter ?? '—'} s), in ${seconds.toFixed(1)} s`,
    data: { accepted: accepted.length, refused: statuses, retryAfter: refused[0]?.retryAfter, seconds }
  }
}

async function creationBurst (port: number): Promise<Outcome> {
  const jwt = await token('burster', ['burst'])
  const statuses: number[] = []
  const seconds = await pool(2000, 20, async (i) => { statuses.push((await http(port, 'POST', '/teams/burst/tasks', jwt, { title: `b${i}` })).status) })
  const counts = tally(statuses)
  return {
    now: `${showTally(counts)}, answered at ${int(statuses.length / seconds)}/s (20 in flight)`,
    data: { statuses: counts, seconds, answeredPerSecond: statuses.length / seconds }
  }
}

async function badTokens (port: number): Promise<Outcome> {
  const statuses: number[] = []
  const start = performance.now()
  for (let i = 0; i < 300; i++) statuses.push((await http(port, 'GET', '/teams/red/tasks', `bad.token.${i}`)).status)
  const seconds = (performance.now() - start) / 1000
  const first429 = statuses.indexOf(429)
  return {
    now: `${showTally(tally(statuses))} in ${seconds.toFixed(2)} s${first429 < 0 ? '' : ` (429 from request #${first429 + 1} on)`}`,
    data: { statuses: tally(statuses), first429: first429 < 0 ? null : first429 + 1, seconds }
  }
}

async function bigList (port: number): Promise<Outcome> {
  const jwt = await token('lister', ['list'])
  const start = performance.now()
  let reply = await http(port, 'GET', '/teams/list/tasks', jwt)
  const first = { bytes: Buffer.byteLength(reply.body), ms: reply.ms, status: reply.status }
  let pages = 0; let tasks = 0; let total = 0
  for (;;) {
    if (reply.status !== 200) throw new Error(`abuse: list page answered ${reply.status}: ${reply.body.slice(0, 200)}`)
    const page = JSON.parse(reply.body) as { tasks: unknown[], nextCursor: string | null }
    pages++; tasks += page.tasks.length; total += Buffer.byteLength(reply.body)
    if (page.nextCursor === null || pages >= 1000) break
    reply = await http(port, 'GET', `/teams/list/tasks?cursor=${encodeURIComponent(page.nextCursor)}`, jwt)
  }
  const allMs = performance.now() - start
  return {
    now: `first page ${bytes(first.bytes)} in ${ms(first.ms)} ms; all ${int(tasks)} in ${pages} pages (${bytes(total)}) in ${ms(allMs)} ms`,
    data: { firstPage: first, pages, tasks, totalBytes: total, allMs }
  }
}

/** Upgrades by hand and never reads again: the close frame is never answered. */
async function neverReading (port: number, jwt: string): Promise<Socket> {
  return await new Promise((resolve, reject) => {
    const headers = { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': randomBytes(16).toString('base64') }
    const req = request({ host: '127.0.0.1', port, path: `/realtime?access_token=${jwt}`, headers })
    req.once('upgrade', (_res, socket) => { socket.on('error', () => {}); socket.pause(); resolve(socket) })
    req.once('response', (res) => { reject(new Error(`abuse: upgrade refused with ${res.statusCode ?? 0}`)) })
    req.once('error', reject)
    req.end()
  })
}

async function shutdown (databasePath: string): Promise<Outcome> {
  const server = await startServer(databasePath)
  const socket = await neverReading(server.port, await token('stuck', ['red']))
  await sleep(200)
  const start = performance.now()
  const exited = once(server, 'exit')
  server.kill('SIGTERM')
  const [code, signal] = await within('exit after SIGTERM', 60_000, exited) as [number | null, string | null]
  const exitMs = performance.now() - start
  socket.destroy()
  return { now: `exit ${code ?? signal} after ${(exitMs / 1000).toFixed(2)} s`, data: { exitCode: code, signal, exitMs } }
}

async function main (): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'atlas-abuse-'))
  const databasePath = join(dir, 'abuse.db')
  const startedAt = new Date()
  const results: Array<{ abuse: string, today: string } & Outcome> = []
  const probe = async (row: number, run: () => Promise<Outcome>): Promise<void> => {
    const [abuse, today] = ROWS[row]
    console.log(`${abuse} …`)
    const outcome = await run()
    console.log(`  ${outcome.now}`)
    results[row] = { abuse, today, ...outcome }
  }
  try {
    console.log(`Setup: ${int(REPLAY_TEAM_EVENTS)} + ${int(LIST_TEAM_TASKS)} tasks through a setup server with MAX_MUTATIONS_PER_USER=1000000`)
    const setup = await startServer(databasePath, { MAX_MUTATIONS_PER_USER: '1000000' })
    const seeder = await token('seeder', ['replay', 'list'])
    const setupSeconds = await pool(REPLAY_TEAM_EVENTS + LIST_TEAM_TASKS, 32, async (i) => {
      const team = i < REPLAY_TEAM_EVENTS ? 'replay' : 'list'
      const reply = await http(setup.port, 'POST', `/teams/${team}/tasks`, seeder, { title: `${team} task ${i}` })
      if (reply.status !== 201) throw new Error(`abuse: setup creation answered ${reply.status}: ${reply.body.slice(0, 200)}`)
    })
    await stopChild(setup)
    console.log(`  done in ${setupSeconds.toFixed(1)} s; the measured server starts with default limits`)
    const server = await startServer(databasePath)
    const port = server.port
    await probe(0, async () => await pingFlood(port))
    await probe(1, async () => await foreignSubscribes(port))
    await probe(2, async () => await replayCycles(port, server.pid ?? 0))
    await probe(3, async () => await manySockets(port))
    await probe(4, async () => await creationBurst(port))
    await probe(6, async () => await bigList(port))
    await probe(5, async () => await badTokens(port))
    await stopChild(server)
    await probe(7, async () => await shutdown(join(dir, 'shutdown.db')))
    console.log('\n| abuse | today (issue #10) | now |\n|---|---|---|')
    for (const r of results) console.log(`| ${r.abuse} | ${r.today} | ${r.now} |`)
    console.log(`\nresults: ${writeResults(startedAt, { kind: 'abuse', setupSeconds, rows: results })}`)
  } finally {
    agent.destroy()
    await stopAll()
    rmSync(dir, { recursive: true, force: true })
  }
}

process.once('SIGINT', () => { killAllNow(); process.exit(130) })
main().catch((err: unknown) => {
  console.error(err)
  killAllNow()
  process.exitCode = 1
})
