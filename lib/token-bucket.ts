/**
 * A token bucket: holds at most `capacity` tokens and gains `perSecond` of them each second.
 * Lets a client burst up to `capacity`, then holds it to the steady rate.
 */
export class TokenBucket {
  readonly #capacity: number
  readonly #perMs: number
  #tokens: number
  #updated: number

  constructor (capacity: number, perSecond: number, now = Date.now()) {
    this.#capacity = capacity
    this.#perMs = perSecond / 1000
    this.#tokens = capacity
    this.#updated = now
  }

  /** Takes `n` tokens if the bucket holds them; otherwise takes nothing and returns false. */
  take (n = 1, now = Date.now()): boolean {
    this.#refill(now)
    if (this.#tokens < n) return false
    this.#tokens -= n
    return true
  }

  /** Whether the bucket is full again: forgetting it then changes nothing. */
  full (now = Date.now()): boolean {
    this.#refill(now)
    return this.#tokens >= this.#capacity
  }

  #refill (now: number): void {
    if (now <= this.#updated) return
    this.#tokens = Math.min(this.#capacity, this.#tokens + (now - this.#updated) * this.#perMs)
    this.#updated = now
  }
}
