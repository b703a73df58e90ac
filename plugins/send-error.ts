import type { FastifyReply } from 'fastify'
import { errorBody } from '../lib/errors.js'

/**
 * Answers with a catalogue error (lib/errors.ts): its status and the error body. Sent directly,
 * not thrown: a hook of the integrator's routes (the upgrade, authentication) must answer in
 * the suite's format whatever error handler the integrator set.
 */
export function sendError (reply: FastifyReply, error: { statusCode: number, code: string, message: string }): FastifyReply {
  return reply.code(error.statusCode).send(errorBody(error))
}
