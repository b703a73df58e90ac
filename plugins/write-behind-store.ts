import { channel } from 'node:diagnostics_channel'
import type { FastifyRateLimitStoreCtor } from '@fastify/rate-limit'
import type { Redis } from 'ioredis'

/**
 * Published after each flush with what this instance learned from Redis:
 * `{ counters, key, current }` per window sent. For tests and tools, through diagnostics_channel.
 */
export const syncedChannel = channel('atlas:rate-limit:synced')

/**
 * Adds a batch to a window's counter and starts the window's expiry when this batch opened it;
 * answers the counter and the time the window has left.
 */
const ADD_BATCH = `local current = redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {current, ttl}`

interface Window {
  /** When the window ends (epoch ms), as Redis last said. */
  ends: number
  /** The count across every instance at the last flush, this instance's increments included. */
  known: number
  /** This instance's increments since the last flush. */
  pending: number
  timeWindow: number
  max: number
}

type RedisWithBatch = Redis & { atlasAddBatch?: (key: string, count: number, timeWindow: number) => Promise<[number, number]> }

/**
 * Fixed-window counters shared by every instance through Redis, written behind: a request is
 * counted here at once (no round trip, so a mutation neither waits for Redis nor wakes the
 * process again for its reply) and the counts go to Redis in one pipeline every `flushMs`,
 * whence each instance learns the others' counts. A window counted past half its limit is
 * also read back on every flush while this instance sends nothing for it, so an instance learns
 * what the others admitted even while its own share is idle; windows far from their limit cost
 * no traffic. A limit therefore holds across instances up to what they admit within one flush
 * interval. While Redis is unreachable, each instance still enforces the limit on what it
 * counted itself.
 */
export class WriteBehindCounters {
  readonly #redis: RedisWithBatch
  readonly #prefix: string
  readonly #windows = new Map<string, Window>()
  readonly #flushMs: number
  /** Runs while any window is open: an instance nobody writes through never wakes for it. */
  #timer: NodeJS.Timeout | undefined
  #closed = false
  readonly #onError: (err: unknown) => void

  constructor (redis: Redis, prefix: string, flushMs: number, onError: (err: unknown) => void) {
    this.#redis = redis
    this.#prefix = prefix
    this.#onError = onError
    this.#flushMs = flushMs
    if (this.#redis.atlasAddBatch === undefined) this.#redis.defineCommand('atlasAddBatch', { numberOfKeys: 1, lua: ADD_BATCH })
  }

  /** Counts one request for `key`; returns the count of its window so far and the ms it has left. */
  increment (key: string, timeWindow: number, max: number, now = Date.now()): { current: number, ttl: number } {
    let window = this.#windows.get(key)
    if (window === undefined || window.ends <= now) {
      window = { ends: now + timeWindow, known: 0, pending: 0, timeWindow, max }
      this.#windows.set(key, window)
    }
    window.pending++
    if (this.#timer === undefined && !this.#closed) {
      this.#timer = setInterval(() => { this.flush() }, this.#flushMs)
      this.#timer.unref()
    }
    return { current: window.known + window.pending, ttl: window.ends - now }
  }

  /** Sends what was counted since the last flush; forgets windows that ended. */
  flush (now = Date.now()): void {
    // While Redis is away nothing is sent: counts wait here, and each instance limits on its own.
    const ready = this.#redis.status === 'ready'
    let pipeline: { atlasAddBatch: (key: string, count: number, timeWindow: number) => void, exec: () => Promise<Array<[Error | null, unknown]> | null> } | undefined
    const sent: Array<[string, Window]> = []
    for (const [key, window] of this.#windows) {
      // An ended window's unsent counts belong to no window Redis still holds.
      if (window.ends <= now) {
        this.#windows.delete(key)
        continue
      }
      if (!ready || (window.pending === 0 && window.known * 2 < window.max)) continue
      pipeline ??= this.#redis.pipeline() as unknown as NonNullable<typeof pipeline>
      pipeline.atlasAddBatch(this.#prefix + key, window.pending, window.timeWindow)
      sent.push([key, window])
      // Counted as known at once, so the local view never drops while the batch is in flight.
      window.known += window.pending
      window.pending = 0
    }
    if (this.#windows.size === 0) {
      clearInterval(this.#timer)
      this.#timer = undefined
    }
    if (pipeline === undefined) return
    pipeline.exec().then((results) => {
      const answered = Date.now()
      results?.forEach(([err, reply], i) => {
        if (err !== null) return
        const [current, ttl] = reply as [number, number]
        const [key, window] = sent[i]
        window.known = Math.max(window.known, current)
        window.ends = answered + ttl
        if (syncedChannel.hasSubscribers) syncedChannel.publish({ counters: this, key, current })
      })
    }, this.#onError)
  }

  close (): void {
    this.#closed = true
    this.flush()
    clearInterval(this.#timer)
  }
}

/**
 * @fastify/rate-limit's store interface over shared write-behind counters. The plugin passes
 * the limit's window and maximum as third and fourth arguments to `incr`, which its typings
 * leave out.
 */
export function writeBehindStore (counters: WriteBehindCounters): FastifyRateLimitStoreCtor {
  return class WriteBehindStore {
    incr (key: string, callback: (err: Error | null, result: { current: number, ttl: number }) => void, ...rest: unknown[]): void {
      callback(null, counters.increment(key, rest[0] as number, rest[1] as number))
    }

    // One counter per key, whichever route counts it: the limit is the user's, not a route's.
    child (): WriteBehindStore { return this }
  }
}
