export interface BackoffOptions {
  /** Ceiling of the first delay, in ms (default 250). */
  baseMs?: number
  /** No delay is ever longer than this, in ms (default 10000). */
  capMs?: number
  /** Give up after this many consecutive failed attempts (default: never). */
  maxAttempts?: number
  /** Source of randomness in [0, 1); injectable so tests can check the delays. */
  random?: () => number
}

/**
 * Delay before reconnect attempt `attempt` (0 for the first), with "full jitter": uniformly
 * random between 0 and min(cap, base * 2^attempt). Spreading reconnects over the whole window
 * keeps a crowd of clients dropped at the same moment (a server restart) from coming back in
 * lockstep, which plain exponential backoff would do.
 */
export function backoffDelay (attempt: number, options: { baseMs: number, capMs: number }, random: () => number = Math.random): number {
  // The exponent is clamped so a long outage never computes Infinity or NaN.
  const ceiling = Math.min(options.capMs, options.baseMs * 2 ** Math.min(Math.max(attempt, 0), 30))
  const r = Math.min(Math.max(random(), 0), 1)
  return Math.floor(r * ceiling)
}

/** Counts consecutive failures and hands out the next delay; `reset` after a success. */
export class Backoff {
  readonly baseMs: number
  readonly capMs: number
  readonly maxAttempts: number
  readonly #random: () => number
  #attempt = 0

  constructor (options: BackoffOptions = {}) {
    this.baseMs = options.baseMs ?? 250
    this.capMs = options.capMs ?? 10_000
    this.maxAttempts = options.maxAttempts ?? Infinity
    this.#random = options.random ?? Math.random
  }

  /** How many delays were handed out since the last reset. */
  get attempt (): number { return this.#attempt }

  /** The next delay, or undefined once `maxAttempts` delays were handed out. */
  next (): number | undefined {
    if (this.#attempt >= this.maxAttempts) return undefined
    return backoffDelay(this.#attempt++, this, this.#random)
  }

  reset (): void { this.#attempt = 0 }
}
