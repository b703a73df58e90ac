/**
 * A latency histogram in microseconds with bounded relative error (< 0.8 %), fixed memory
 * (about 13 KB) whatever the sample count, and exact merge: the load generator records hundreds
 * of thousands of deliveries per run, and the orchestrator merges rounds without raw samples.
 *
 * Values below 256 µs get one bucket each; above, each power of two is split in 128 buckets.
 */
const LINEAR = 256
const SUB_BUCKETS = 128
const SUB_BITS = 7
const BUCKETS = LINEAR + (31 - 8) * SUB_BUCKETS

export interface HistogramJSON {
  count: number
  max: number
  /** Sparse [bucket, count] pairs. */
  buckets: Array<[number, number]>
}

export class Histogram {
  readonly #counts = new Uint32Array(BUCKETS)
  count = 0
  /** Exact largest value seen, in µs. */
  max = 0

  record (micros: number): void {
    const v = micros <= 0 ? 0 : Math.min(Math.round(micros), 0x7fffffff)
    this.#counts[bucketOf(v)]++
    this.count++
    if (v > this.max) this.max = v
  }

  merge (other: Histogram): void {
    const counts = other.#counts
    for (let i = 0; i < BUCKETS; i++) this.#counts[i] += counts[i]
    this.count += other.count
    if (other.max > this.max) this.max = other.max
  }

  /** Value at percentile p (0–100), in µs: the upper edge of its bucket, never above max. */
  percentile (p: number): number {
    if (this.count === 0) return 0
    const rank = Math.max(1, Math.ceil((p / 100) * this.count))
    let seen = 0
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.#counts[i]
      if (seen >= rank) return Math.min(upperEdge(i), this.max)
    }
    return this.max
  }

  toJSON (): HistogramJSON {
    const buckets: Array<[number, number]> = []
    for (let i = 0; i < BUCKETS; i++) if (this.#counts[i] > 0) buckets.push([i, this.#counts[i]])
    return { count: this.count, max: this.max, buckets }
  }

  static fromJSON (json: HistogramJSON): Histogram {
    const h = new Histogram()
    for (const [i, n] of json.buckets) h.#counts[i] = n
    h.count = json.count
    h.max = json.max
    return h
  }
}

function bucketOf (v: number): number {
  if (v < LINEAR) return v
  const exponent = 31 - Math.clz32(v)
  const shift = exponent - SUB_BITS
  return LINEAR + (exponent - 8) * SUB_BUCKETS + ((v >>> shift) - SUB_BUCKETS)
}

function upperEdge (bucket: number): number {
  if (bucket < LINEAR) return bucket
  const k = bucket - LINEAR
  const exponent = Math.floor(k / SUB_BUCKETS) + 8
  const mantissa = (k % SUB_BUCKETS) + SUB_BUCKETS
  const shift = exponent - SUB_BITS
  return (mantissa + 1) * 2 ** shift - 1
}
