/** What the core logs through: pino's shape (Fastify's logger fits), nothing more. */
export interface Logger {
  warn (obj: object, msg: string): void
  error (obj: object, msg: string): void
  debug (obj: object, msg: string): void
}

export const silentLogger: Logger = { warn () {}, error () {}, debug () {} }
