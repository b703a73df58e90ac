// A high surrogate not followed by a low one, or a low one not preceded by a high one. JSON
// carries such strings happily, but SQLite stores them as U+FFFD per byte: the stored string
// would no longer equal the one broadcast.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

/** Whether a string is well-formed UTF-16 (no lone surrogate), so it survives storage unchanged. */
export function isWellFormed (value: string): boolean {
  return !LONE_SURROGATE.test(value)
}
