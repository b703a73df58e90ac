/** What the core logs through: pino's shape (Fastify's logger fits), nothing more. */
export interface Logger {
  info (obj: object, msg: string): void
  warn (obj: object, msg: string): void
  error (obj: object, msg: string): void
  debug (obj: object, msg: string): void
  /** A logger whose every line carries `bindings` (pino's child loggers). */
  child (bindings: Record<string, unknown>): Logger
}

export const silentLogger: Logger = { info () {}, warn () {}, error () {}, debug () {}, child () { return silentLogger } }
