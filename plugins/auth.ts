import fp from 'fastify-plugin'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import type { Principal } from '../lib/types.js'
import { checkFunction } from './options.js'

/**
 * Supplied by the integrator: who is making this request (user id and team ids), or
 * null/undefined when the request carries no valid credentials. Used for HTTP and upgrades.
 */
export type Authenticate = (request: FastifyRequest) => Principal | null | undefined | Promise<Principal | null | undefined>

export interface AtlasAuthOptions {
  authenticate: Authenticate
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Resolves the request's principal (once per request) or answers 401 and returns null. */
    atlasRequirePrincipal (request: FastifyRequest, reply: FastifyReply): Promise<Principal | null>
  }
  interface FastifyRequest {
    atlasPrincipal: Principal | null
  }
}

const NAME = 'atlas-auth'

const authPlugin: FastifyPluginAsync<AtlasAuthOptions> = async (fastify, options) => {
  checkFunction(NAME, 'authenticate', options.authenticate, { required: true })
  const { authenticate } = options
  fastify.decorateRequest('atlasPrincipal', null)
  fastify.decorate('atlasRequirePrincipal', async (request: FastifyRequest, reply: FastifyReply) => {
    if (request.atlasPrincipal !== null) return request.atlasPrincipal
    let principal: Principal | null | undefined
    try {
      principal = await authenticate(request)
    } catch (err) {
      // An authenticator that throws is treated as "not authenticated", never as a 500 that
      // would tell an attacker which tokens reach deeper code.
      request.log.warn({ err }, 'atlas: authenticate threw; answering 401')
      principal = null
    }
    if (principal == null || typeof principal.userId !== 'string' || !Array.isArray(principal.teams)) {
      await reply.code(401).header('www-authenticate', 'Bearer').send({ statusCode: 401, code: 'UNAUTHORIZED', error: 'Unauthorized', message: 'A valid access token is required' })
      return null
    }
    request.atlasPrincipal = principal
    return principal
  })
}

export const atlasAuth = fp(authPlugin, { fastify: '5.x', name: NAME })
export default atlasAuth

/** Answers 403 unless the principal belongs to `teamId`. Returns whether the request may go on. */
export async function requireTeam (principal: Principal, teamId: string, reply: FastifyReply): Promise<boolean> {
  if (principal.teams.includes(teamId)) return true
  await reply.code(403).send({ statusCode: 403, code: 'FORBIDDEN_TEAM', error: 'Forbidden', message: `Not a member of team ${teamId}` })
  return false
}
