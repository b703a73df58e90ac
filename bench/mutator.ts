import { Agent, request } from 'node:http'
import { performance } from 'node:perf_hooks'
import type { DeliveryTracker } from './tracker.js'

/** Requests in flight beyond which the sender stops adding more: the system fell behind. */
const MAX_INFLIGHT = 2000
const REQUEST_TIMEOUT_MS = 30_000

/**
 * Sends task creations over HTTP, round-robin over teams and, for each team, alternately over
 * the server processes (mutation i goes to team i mod T on process floor(i / T) mod P), so every
 * team's events cross Redis half of the time on both systems.
 */
export class Mutator {
  readonly #ports: readonly number[]
  readonly #teamIds: readonly string[]
  readonly #tracker: DeliveryTracker
  readonly #authorization: string
  readonly #agents: Agent[]
  #next = 0

  constructor (ports: readonly number[], teamIds: readonly string[], token: string, tracker: DeliveryTracker) {
    this.#ports = ports
    this.#teamIds = teamIds
    this.#tracker = tracker
    this.#authorization = `Bearer ${token}`
    // Keep-alive, a bounded pool per process: the cost measured is the server's, not TCP set-up.
    this.#agents = ports.map(() => new Agent({ keepAlive: true, maxSockets: 32 }))
  }

  /** Sends `count` mutations at `rate` per second; resolves when all are sent, with the seconds sending took. */
  async atRate (count: number, rate: number): Promise<number> {
    const start = performance.now()
    const deadline = start + (count / rate) * 2000 + 5000
    let sent = 0
    await new Promise<void>((resolve) => {
      const tick = (): void => {
        const now = performance.now()
        const due = Math.min(count, Math.floor(((now - start) * rate) / 1000) + 1)
        while (sent < due && this.#tracker.inflight < MAX_INFLIGHT) { this.#send(); sent++ }
        if (sent >= count || now > deadline) { clearInterval(timer); resolve() }
      }
      const timer = setInterval(tick, 1)
      tick()
    })
    return (performance.now() - start) / 1000
  }

  /** Sends `count` mutations as fast as `concurrency` requests in flight allow; resolves when all are answered. */
  async burst (count: number, concurrency: number): Promise<number> {
    const start = performance.now()
    let sent = 0
    await new Promise<void>((resolve) => {
      const pump = (): void => {
        while (sent < count && this.#tracker.inflight < concurrency) { sent++; this.#send(pump) }
        if (sent >= count && this.#tracker.inflight === 0) resolve()
      }
      pump()
    })
    return (performance.now() - start) / 1000
  }

  close (): void {
    for (const agent of this.#agents) agent.destroy()
  }

  #send (onDone?: () => void): void {
    const n = this.#next++
    const teams = this.#teamIds.length
    const team = n % teams
    const port = this.#ports[Math.floor(n / teams) % this.#ports.length]
    const agent = this.#agents[Math.floor(n / teams) % this.#ports.length]
    const index = this.#tracker.sending(team)
    const body = `{"title":"m${index}"}`
    let settled = false
    const settle = (ok: boolean): void => {
      if (settled) return
      settled = true
      this.#tracker.responded(index, ok)
      onDone?.()
    }
    const req = request({
      host: '127.0.0.1',
      port,
      agent,
      method: 'POST',
      path: `/teams/${this.#teamIds[team]}/tasks`,
      headers: { authorization: this.#authorization, 'content-type': 'application/json', 'content-length': body.length }
    }, (res) => {
      const ok = res.statusCode === 201
      res.resume()
      res.once('end', () => { settle(ok) })
      res.once('error', () => { settle(false) })
    })
    req.once('error', () => { settle(false) })
    // A request the server never answers counts as failed instead of holding the run forever.
    req.setTimeout(REQUEST_TIMEOUT_MS, () => { req.destroy() })
    req.end(body)
  }
}
