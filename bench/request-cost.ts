/**
 * `npm run bench:request-cost`: what one mutation request costs the server, in CPU µs, at a few
 * fixed rates, for node:http alone (the floor), Atlas Realtime and Socket.IO + redis-adapter,
 * one process each, no WebSocket clients. It shows how much of the seed scenario's per-mutation
 * cost is the machine's price for waking a mostly idle process rather than either system's work:
 * on shared vCPUs the same request costs far more at 100/s than at 1,000/s.
 */
import { randomBytes } from 'node:crypto'
import { parseArgs } from 'node:util'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { signToken } from '../examples/jwt-auth.js'
import { positive } from './config.js'
import { Mutator } from './mutator.js'
import { freePort, killAllNow, spawnTracked, startRedis, stopAll, stopChild, waitForHttp } from './processes.js'
import { sampleProcess } from './procstat.js'
import { writeResults } from './report.js'
import { startSystem, SYSTEM_LABEL, type RunningSystem } from './systems.js'
import { DeliveryTracker } from './tracker.js'

const USAGE = `Usage: npm run bench:request-cost [-- --rates 100,200,1000] [--seconds 8] [--subjects bare,atlas,socketio]`
const WARM_UP = 3000
const TEAMS = ['t0', 't1', 't2', 't3']
const ALL_SUBJECTS = ['bare', 'atlas', 'socketio'] as const
type Subject = typeof ALL_SUBJECTS[number]
const LABEL: Record<Subject, string> = { bare: 'node:http alone', ...SYSTEM_LABEL }

interface Options { rates: number[], seconds: number, subjects: Subject[] }

function parseOptions (argv: string[]): Options {
  const { values } = parseArgs({ args: argv, options: { rates: { type: 'string' }, seconds: { type: 'string' }, subjects: { type: 'string' }, help: { type: 'boolean' } } })
  if (values.help === true) { console.log(USAGE); process.exit(0) }
  const subjects = (values.subjects ?? ALL_SUBJECTS.join(',')).split(',').map((name) => {
    if (!(ALL_SUBJECTS as readonly string[]).includes(name)) throw new Error(`request-cost: unknown subject "${name}" (bare, atlas, socketio)\n${USAGE}`)
    return name as Subject
  })
  return {
    rates: (values.rates ?? '100,200,1000').split(',').map((rate) => positive('rates', rate) as number),
    seconds: positive('seconds', values.seconds) ?? 8,
    subjects
  }
}

async function startBare (): Promise<RunningSystem> {
  const port = await freePort()
  const script = fileURLToPath(new URL('./bare-http-server.js', import.meta.url))
  const child = spawnTracked(process.execPath, [script], { stdio: 'ignore', env: { ...process.env, PORT: String(port) } })
  await waitForHttp(port, '/health', child)
  return { ports: [port], pids: [child.pid ?? 0], stop: async () => { await stopChild(child) } }
}

/** CPU µs (user + kernel, and kernel alone) per answered request over one window at `rate`. */
async function measure (running: RunningSystem, token: string, rate: number, count: number): Promise<{ cpu: number, kernel: number, ok: number }> {
  const tracker = new DeliveryTracker(TEAMS.map(() => 0))
  const mutator = new Mutator(running.ports, TEAMS, token, tracker)
  try {
    tracker.openWindow(`${rate}/s`, rate)
    const before = sampleProcess(running.pids[0])
    await mutator.atRate(count, rate)
    tracker.doneSending()
    await tracker.waitComplete(30_000)
    const after = sampleProcess(running.pids[0])
    const { httpOk } = tracker.result(0)
    return { cpu: (after.cpuMicros - before.cpuMicros) / httpOk, kernel: (after.systemMicros - before.systemMicros) / httpOk, ok: httpOk }
  } finally {
    mutator.close()
  }
}

async function main (): Promise<void> {
  const { rates, seconds, subjects } = parseOptions(process.argv.slice(2))
  const redis = await startRedis()
  const workDir = mkdtempSync(join(tmpdir(), 'atlas-request-cost-'))
  const jwtSecret = randomBytes(32).toString('hex')
  const token = await signToken(jwtSecret, 'bench', TEAMS)
  // One row per window, in the order run (a rate may be given twice, to see drift).
  const rows: Array<{ rate: number } & Partial<Record<Subject, { cpu: number, kernel: number }>>> = []
  const startedAt = new Date()
  const started: Array<{ subject: Subject, running: RunningSystem }> = []
  try {
    console.log(`Request cost: one server process each, ${seconds} s per rate after ${WARM_UP} warm-up requests, subjects taking turns at each rate; redis-server at ${redis.url}`)
    for (const subject of subjects) {
      const running = subject === 'bare'
        ? await startBare()
        : await startSystem(subject, { databasePath: join(workDir, `${subject}.db`), redisUrl: redis.url, jwtSecret, processes: 1 })
      started.push({ subject, running })
      await measure(running, token, 1000, WARM_UP)
    }
    for (const rate of rates) {
      const row: typeof rows[number] = { rate }
      rows.push(row)
      for (const { subject, running } of started) {
        const { cpu, kernel, ok } = await measure(running, token, rate, rate * seconds)
        row[subject] = { cpu, kernel }
        console.log(`  ${LABEL[subject].padEnd(26)} ${String(rate).padStart(5)}/s: ${cpu.toFixed(0).padStart(5)} µs per request (${kernel.toFixed(0)} kernel), ${ok} answered`)
      }
    }
    console.log('\nServer CPU µs per request (of which kernel)')
    console.log(`  ${'rate'.padEnd(8)}${subjects.map((s) => LABEL[s].padStart(28)).join('')}`)
    for (const row of rows) {
      const cells = subjects.map((s) => `${row[s]?.cpu.toFixed(0)} (${row[s]?.kernel.toFixed(0)})`.padStart(28))
      console.log(`  ${`${row.rate}/s`.padEnd(8)}${cells.join('')}`)
    }
    console.log(`\nresults: ${writeResults(startedAt, { kind: 'request-cost', windowSeconds: seconds, warmUp: WARM_UP, subjects, rows })}`)
  } finally {
    await stopAll()
    await redis.stop()
    rmSync(workDir, { recursive: true, force: true })
  }
}

process.once('SIGINT', () => { killAllNow(); process.exit(130) })
main().catch((err: unknown) => {
  console.error(err)
  killAllNow()
  process.exitCode = 1
})
