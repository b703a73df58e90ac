import { build, decodeFromCompressedBase64, encodeIntoCompressedBase64, type Histogram } from 'hdr-histogram-js'

/**
 * The bench's latency histograms, in µs: HdrHistogram with 3 significant digits, so every
 * percentile is within 0.1 % of a recorded value, memory grows with the range of values and not
 * with their count (a run records hundreds of thousands of deliveries), and merging (`add`) is
 * exact. Percentiles are the upper edge of their bucket, as is `maxValue` once decoded, so a
 * percentile is never above the max. The JavaScript implementation: the WebAssembly one needs
 * an asynchronous start and gains nothing at the bench's rates.
 */
export function latencyHistogram (): Histogram {
  return build({ numberOfSignificantValueDigits: 3, useWebAssembly: false })
}

export type { Histogram }

/** A histogram on its way from a load generator to the orchestrator: HdrHistogram's compressed encoding. */
export type EncodedHistogram = string

export function encodeHistogram (histogram: Histogram): EncodedHistogram {
  return encodeIntoCompressedBase64(histogram)
}

export function decodeHistogram (encoded: EncodedHistogram): Histogram {
  return decodeFromCompressedBase64(encoded)
}
