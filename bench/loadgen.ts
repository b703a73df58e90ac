/**
 * The load generator: a process of its own (forked by bench/run.ts, talking over IPC) that
 * holds every WebSocket client of a run, sends the mutations, and measures each delivery
 * against the send time on its own clock. It asks the orchestrator to sample the servers'
 * CPU and memory at the edges of each measured window (`mark`), waiting for the answer so the
 * window starts only once the sample is taken.
 */
import { performance } from 'node:perf_hooks'
import { signToken } from '../examples/jwt-auth.js'
import { AtlasBenchClient, SocketIoBenchClient, type BenchClient } from './clients.js'
import { protocolOf, WARM_UP, type LoadMessage, type LoadPlan, type LoadResult, type OrchestratorMessage, type WindowResult } from './ipc.js'
import { Mutator } from './mutator.js'
import { ClientState, DeliveryTracker } from './tracker.js'
import { decodeHistogram } from './histogram.js'

function send (message: LoadMessage): void {
  process.send?.(message)
}

/** How long deliveries still missing after the drain time are waited for before they count as lost. */
const LATE_MS = 30_000

const pendingAcks = new Map<string, () => void>()

/** Asks the orchestrator to sample at this point and waits until it has. */
async function mark (name: string): Promise<void> {
  await new Promise<void>((resolve) => {
    pendingAcks.set(name, resolve)
    send({ type: 'mark', name })
  })
}

const teamId = (k: number): string => `bt${k}`

class LoadGenerator {
  readonly tracker: DeliveryTracker
  readonly clients: BenchClient[] = []
  readonly mutator: Mutator
  phase = 'starting'
  connected = 0
  connectFailures = 0

  constructor (readonly plan: LoadPlan, tokens: string[], writerToken: string) {
    const { teams, ports, firstClient, clients } = plan
    const perTeam = new Array<number>(teams).fill(0)
    for (let c = firstClient; c < firstClient + clients; c++) perTeam[c % teams]++
    this.tracker = new DeliveryTracker(perTeam)
    // Client c: team c mod T, and the team's clients alternate over the processes.
    for (let c = firstClient; c < firstClient + clients; c++) {
      const team = c % teams
      const target = { port: ports[Math.floor(c / teams) % ports.length], teamId: teamId(team), token: tokens[team], state: new ClientState(team), tracker: this.tracker }
      this.clients.push(protocolOf(plan.system) === 'atlas' ? new AtlasBenchClient(target) : new SocketIoBenchClient(target))
    }
    this.mutator = new Mutator(ports, Array.from({ length: teams }, (_, k) => teamId(k)), writerToken, this.tracker)
  }

  progress (): void {
    const { sent, delivered, expected } = this.tracker.totals()
    send({ type: 'progress', phase: this.phase, connected: this.connected, target: this.plan.clients, sent, delivered, expected })
  }

  /** Opens every connection, at most `concurrency` handshakes at a time; a failed one is retried twice. */
  async connectAll (concurrency: number, resume = false): Promise<number> {
    const start = performance.now()
    this.connected = 0
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < this.clients.length) {
        const client = this.clients[next++]
        for (let attempt = 1; ; attempt++) {
          try {
            await client.connect(resume)
            this.connected++
            break
          } catch {
            if (attempt >= 3) { this.connectFailures++; break }
            await new Promise((resolve) => setTimeout(resolve, 250 * attempt))
          }
        }
      }
    }
    await Promise.all(Array.from({ length: Math.min(concurrency, this.clients.length) }, worker))
    return performance.now() - start
  }

  async closeAll (): Promise<void> {
    await Promise.all(this.clients.map(async (c) => { await c.close() }))
    this.connected = 0
  }

  /** The plan's warm-up mutations at `rate`, as a window the figures leave out (none when warmup is 0). */
  async warmUp (windows: WindowResult[], rate: number): Promise<void> {
    if (this.plan.warmup === 0) return
    this.phase = 'warm-up'
    windows.push(await this.window(WARM_UP, this.plan.warmup, rate))
  }

  /**
   * One measured window: sample, send `count` at `rate`, wait for the deliveries, sample. What
   * has not arrived within the drain time is given up to LATE_MS more, so a late delivery is
   * told apart from a lost one.
   */
  async window (name: string, count: number, rate: number): Promise<WindowResult> {
    await mark(`${name}:start`)
    this.tracker.openWindow(name, rate)
    const seconds = await this.mutator.atRate(count, rate)
    this.tracker.doneSending()
    const inTime = await this.tracker.waitComplete(this.plan.drainMs)
    const deliveredInTime = this.tracker.currentDelivered
    if (!inTime) {
      this.phase = `${this.phase} (waiting for late deliveries)`
      await this.tracker.waitComplete(LATE_MS)
    }
    const result = { ...this.tracker.result(seconds), late: this.tracker.currentDelivered - deliveredInTime }
    await mark(`${name}:end`)
    return result
  }
}

async function run (plan: LoadPlan): Promise<LoadResult> {
  const tokens = await Promise.all(Array.from({ length: plan.teams }, async (_, k) => await signToken(plan.jwtSecret, `bench-${teamId(k)}`, [teamId(k)])))
  const writer = await signToken(plan.jwtSecret, 'bench-writer', Array.from({ length: plan.teams }, (_, k) => teamId(k)))
  const gen = new LoadGenerator(plan, tokens, writer)
  const ticker = setInterval(() => { gen.progress() }, 1000)
  try {
    gen.phase = 'connecting'
    const connectMs = await gen.connectAll(plan.connectConcurrency)
    gen.progress()
    await mark('connected')
    const result: LoadResult = { connected: gen.connected, connectFailures: gen.connectFailures, connectMs, resyncs: 0, windows: [] }
    switch (plan.scenario) {
      case 'seed':
      case 'wide':
        await gen.warmUp(result.windows, plan.rate)
        gen.phase = 'sending'
        result.windows.push(await gen.window('run', plan.mutations, plan.rate))
        break
      case 'saturation':
        result.saturation = await saturate(gen, result.windows)
        break
      case 'storm':
        result.storm = await storm(gen, result.windows)
        break
      case 'idle':
        gen.phase = 'idle'
        break
    }
    gen.phase = 'done'
    result.resyncs = gen.tracker.resyncs
    await gen.closeAll()
    gen.mutator.close()
    return result
  } finally {
    clearInterval(ticker)
  }
}

/**
 * Raises the rate step by step while it holds: p99 within the limit, every delivery in within
 * the drain time (not falling behind), and the sender achieving the rate (HTTP keeping up).
 */
async function saturate (gen: LoadGenerator, windows: WindowResult[]): Promise<{ highestHeldRate: number, stoppedBecause: string }> {
  const { startRate, stepRate, stepSeconds, maxRate, p99LimitMs } = gen.plan.saturation
  await gen.warmUp(windows, startRate)
  let highest = 0
  for (let rate = startRate; rate <= maxRate; rate += stepRate) {
    gen.phase = `saturation ${rate}/s`
    const w = await gen.window(`rate-${rate}`, Math.round(rate * stepSeconds), rate)
    windows.push(w)
    const p99 = decodeHistogram(w.latency).getValueAtPercentile(99) / 1000
    const why = p99 > p99LimitMs
      ? `p99 ${p99.toFixed(1)} ms > ${p99LimitMs} ms at ${rate}/s`
      : w.late > 0 || w.delivered < w.expected
        ? `deliveries fell behind at ${rate}/s (${w.expected - w.delivered + w.late} not in within ${gen.plan.drainMs} ms after the last send)`
        : w.achievedRate < rate * 0.95 || w.httpErrors > 0
          ? `HTTP fell behind at ${rate}/s (achieved ${w.achievedRate.toFixed(0)}/s, ${w.httpErrors} errors)`
          : undefined
    if (why !== undefined) return { highestHeldRate: highest, stoppedBecause: why }
    highest = rate
    // A short pause so a step's tail never leaks into the next one's window.
    await new Promise((resolve) => setTimeout(resolve, 500))
  }
  return { highestHeldRate: highest, stoppedBecause: `reached the configured maximum ${maxRate}/s` }
}

/**
 * Reconnect storm: every client disconnects, `perTeam` mutations per team happen, then every
 * client reconnects at once, resuming from the last event it holds. Measured: the time until
 * every client holds every event. Latency in this window counts from the reconnect, not from
 * the (much earlier) send.
 */
async function storm (gen: LoadGenerator, windows: WindowResult[]): Promise<{ reconnectedAfterMs: number | null, wholeAfterMs: number | null, recovered: number }> {
  const { warmPerTeam, perTeam, graceMs } = gen.plan.storm
  const teams = gen.plan.teams
  gen.phase = 'warm-up'
  windows.push(await gen.window(WARM_UP, warmPerTeam * teams, gen.plan.rate))
  gen.phase = 'disconnecting'
  await gen.closeAll()
  // Let the servers finish their side of every close before the missed mutations go out.
  await new Promise((resolve) => setTimeout(resolve, 1000))
  gen.phase = 'mutating while offline'
  const firstMissed = gen.tracker.mutations
  gen.tracker.openWindow('storm', 0)
  await gen.mutator.burst(perTeam * teams, 16)
  gen.tracker.doneSending()
  await mark('storm:start')
  gen.phase = 'reconnecting'
  const start = performance.now()
  gen.tracker.restampSince(firstMissed, start)
  let reconnectedAfterMs: number | null = null
  const reconnecting = gen.connectAll(gen.clients.length, true).then(() => {
    if (gen.connectFailures === 0) reconnectedAfterMs = performance.now() - start
  })
  // Atlas ends when every client is whole; a system that never makes them whole gets the grace time after reconnecting.
  const whole = await Promise.race([
    gen.tracker.waitComplete(60_000),
    reconnecting.then(async () => await gen.tracker.waitComplete(graceMs))
  ])
  await reconnecting
  const wholeAfterMs = whole ? gen.tracker.completedAt - start : null
  const window = gen.tracker.result(0)
  // Measured from the reconnect: the sends happened while everyone was away.
  const result = { ...window, late: 0, completeAfterMs: wholeAfterMs, durationMs: wholeAfterMs ?? Math.max(0, gen.tracker.lastDeliveryAt - start) }
  await mark('storm:end')
  windows.push(result)
  const recovered = gen.clients.filter((c) => c.recovered).length
  return { reconnectedAfterMs, wholeAfterMs, recovered }
}

process.on('message', (message: OrchestratorMessage) => {
  if (message.type === 'ack') {
    pendingAcks.get(message.name)?.()
    pendingAcks.delete(message.name)
    return
  }
  run(message.plan).then((result) => {
    send({ type: 'result', result })
    process.disconnect?.()
  }, (err: unknown) => {
    send({ type: 'failed', message: err instanceof Error ? err.stack ?? err.message : String(err) })
    process.disconnect?.()
  })
})

// The orchestrator gone means the run is over: never linger holding thousands of sockets.
process.on('disconnect', () => { setTimeout(() => process.exit(0), 100).unref() })
