import { performance } from 'node:perf_hooks'
import { encodeHistogram, latencyHistogram } from './histogram.js'
import type { WindowResult } from './ipc.js'

/** What the tracker keeps per client: its team, the last order key and which team events it holds. */
export class ClientState {
  /** Highest order key (Atlas `seq`, the peer's row order) seen; a lower one is a reordering. */
  lastKey = 0
  /** received[k] = 1 once the team's k-th mutation arrived. */
  received: Uint8Array = new Uint8Array(64)
  constructor (readonly team: number) {}
}

class Window {
  readonly latency = latencyHistogram()
  /** HTTP request to response, to tell the commit path's latency from the fan-out's. */
  readonly httpLatency = latencyHistogram()
  /**
   * Atlas only: the event's `at` (wall clock when its transaction began, whole ms) to receipt
   * (wall clock, sub-ms): the span closest to what the server's delivery-lag histogram times.
   */
  readonly sinceCommit = latencyHistogram()
  sent = 0
  httpOk = 0
  httpErrors = 0
  expected = 0
  delivered = 0
  duplicated = 0
  outOfOrder = 0
  firstSendAt = 0
  lastSendAt = 0
  lastDeliveryAt = 0
  completeAt = 0
  maxInflight = 0
  constructor (readonly name: string, readonly rate: number, readonly startedAt: number) {}
}

/**
 * Ground truth of a run, in the load generator: every mutation sent (its team, its ordinal in
 * the team, its send time, its window) and every delivery to every client. From that it counts
 * expected, delivered, lost, duplicated and reordered deliveries and the latency (receive time
 * minus send time on this one process clock). Arrays are typed and grow by doubling, so a
 * delivery costs a few array reads and no allocation.
 */
export class DeliveryTracker {
  #team = new Int32Array(1024)
  #ordinal = new Int32Array(1024)
  #sentAt = new Float64Array(1024)
  #window = new Int32Array(1024)
  #mutations = 0
  readonly #perTeam: number[]
  readonly #windows: Window[] = []
  #inflight = 0
  foreign = 0
  unknown = 0
  resyncs = 0
  readonly #onComplete = new Set<() => void>()
  #sendingDone = false

  /** `clientsPerTeam[t]`: clients of team t in this process; each expects every event of t. */
  constructor (readonly clientsPerTeam: readonly number[]) {
    this.#perTeam = clientsPerTeam.map(() => 0)
  }

  get mutations (): number { return this.#mutations }
  get inflight (): number { return this.#inflight }

  /** Opens a window: mutations sent from now on are counted in it. */
  openWindow (name: string, rate: number): void {
    this.#windows.push(new Window(name, rate, performance.now()))
    this.#sendingDone = false
  }

  get #current (): Window {
    const w = this.#windows.at(-1)
    if (w === undefined) throw new Error('tracker: no window open')
    return w
  }

  /** Records a mutation about to be sent to `team`; returns its global index (its title is `m<index>`). */
  sending (team: number): number {
    const i = this.#mutations++
    if (i >= this.#team.length) this.#grow()
    const w = this.#current
    const now = performance.now()
    this.#team[i] = team
    this.#ordinal[i] = this.#perTeam[team]++
    this.#sentAt[i] = now
    this.#window[i] = this.#windows.length - 1
    if (w.sent++ === 0) w.firstSendAt = now
    w.lastSendAt = now
    if (++this.#inflight > w.maxInflight) w.maxInflight = this.#inflight
    return i
  }

  /** The HTTP answer to mutation `i`: only a committed mutation is expected to be delivered. */
  responded (i: number, ok: boolean): void {
    this.#inflight--
    const w = this.#windows[this.#window[i]]
    w.httpLatency.recordValue((performance.now() - this.#sentAt[i]) * 1000)
    if (ok) {
      w.httpOk++
      w.expected += this.clientsPerTeam[this.#team[i]]
    } else {
      w.httpErrors++
    }
    this.#checkComplete(w)
  }

  /** Latency of the given mutations is measured from `at` instead of their send time (the storm's reconnect). */
  restampSince (fromIndex: number, at: number): void {
    for (let i = fromIndex; i < this.#mutations; i++) this.#sentAt[i] = at
  }

  /**
   * One event arrived at `client`: mutation `index`, carrying order key `key`, and for Atlas
   * `committedAtMs`, the event's `at` in ms since the epoch.
   */
  delivered (client: ClientState, index: number, key: number, committedAtMs = NaN): void {
    const now = performance.now()
    if (!(index >= 0 && index < this.#mutations)) { this.unknown++; return }
    if (this.#team[index] !== client.team) { this.foreign++; return }
    const w = this.#windows[this.#window[index]]
    const k = this.#ordinal[index]
    if (k >= client.received.length) client.received = grow8(client.received, k)
    if (client.received[k] === 1) { w.duplicated++; return }
    client.received[k] = 1
    if (key <= client.lastKey) w.outOfOrder++
    else client.lastKey = key
    w.delivered++
    w.lastDeliveryAt = now
    w.latency.recordValue((now - this.#sentAt[index]) * 1000)
    // timeOrigin + now is this process's wall clock with sub-ms precision; `at` was truncated
    // to the ms, so the span is over-stated by less than 1 ms, never under-stated.
    if (!Number.isNaN(committedAtMs)) w.sinceCommit.recordValue(Math.max(0, (performance.timeOrigin + now - committedAtMs) * 1000))
    this.#checkComplete(w)
  }

  totals (): { sent: number, delivered: number, expected: number } {
    let delivered = 0
    let expected = 0
    for (const w of this.#windows) { delivered += w.delivered; expected += w.expected }
    return { sent: this.#mutations, delivered, expected }
  }

  /** True once every mutation of the current window was answered and every expected delivery arrived. */
  get currentComplete (): boolean {
    const w = this.#current
    return w.completeAt > 0
  }

  get currentDelivered (): number { return this.#current.delivered }

  /** When the current window's last delivery arrived (performance.now() time), 0 before any. */
  get lastDeliveryAt (): number { return this.#current.lastDeliveryAt }

  /** When the current window completed (performance.now() time), 0 if it has not. */
  get completedAt (): number { return this.#current.completeAt }

  /** Resolves when the current window completes, or after `timeoutMs`. */
  async waitComplete (timeoutMs: number): Promise<boolean> {
    if (this.currentComplete) return true
    return await new Promise((resolve) => {
      const done = (): void => { clearTimeout(timer); this.#onComplete.delete(done); resolve(true) }
      const timer = setTimeout(() => { this.#onComplete.delete(done); resolve(false) }, timeoutMs)
      this.#onComplete.add(done)
    })
  }

  /** The current window's figures; `sendSeconds` is how long sending took. */
  result (sendSeconds: number): Omit<WindowResult, 'late'> {
    const w = this.#current
    const end = Math.max(w.lastDeliveryAt, w.lastSendAt)
    return {
      name: w.name,
      rate: w.rate,
      sent: w.sent,
      httpOk: w.httpOk,
      httpErrors: w.httpErrors,
      achievedRate: sendSeconds > 0 ? w.sent / sendSeconds : 0,
      expected: w.expected,
      delivered: w.delivered,
      duplicated: w.duplicated,
      outOfOrder: w.outOfOrder,
      foreign: this.foreign,
      unknown: this.unknown,
      latency: encodeHistogram(w.latency),
      httpLatency: encodeHistogram(w.httpLatency),
      ...(w.sinceCommit.totalCount > 0 ? { sinceCommit: encodeHistogram(w.sinceCommit) } : {}),
      durationMs: w.sent === 0 ? 0 : end - w.firstSendAt,
      completeAfterMs: w.completeAt > 0 ? w.completeAt - w.startedAt : null,
      maxInflight: w.maxInflight
    }
  }

  #checkComplete (w: Window): void {
    if (w.completeAt > 0 || w !== this.#windows.at(-1)) return
    if (w.httpOk + w.httpErrors < w.sent || w.delivered < w.expected || !this.#sendingDone) return
    w.completeAt = performance.now()
    for (const done of [...this.#onComplete]) done()
  }

  /** Sending of the current window is over; from now on the window can complete. */
  doneSending (): void {
    this.#sendingDone = true
    this.#checkComplete(this.#current)
  }

  #grow (): void {
    const n = this.#team.length * 2
    this.#team = growTo(this.#team, new Int32Array(n))
    this.#ordinal = growTo(this.#ordinal, new Int32Array(n))
    this.#sentAt = growTo(this.#sentAt, new Float64Array(n))
    this.#window = growTo(this.#window, new Int32Array(n))
  }
}

function growTo<T extends Int32Array | Float64Array> (from: T, to: T): T {
  to.set(from)
  return to
}

function grow8 (from: Uint8Array, index: number): Uint8Array {
  let n = from.length * 2
  while (n <= index) n *= 2
  const to = new Uint8Array(n)
  to.set(from)
  return to
}
