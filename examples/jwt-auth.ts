import { SignJWT, jwtVerify } from 'jose'
import type { FastifyRequest } from 'fastify'
import type { Principal } from '../lib/types.js'

/**
 * The example's authenticate: HS256 JWTs with claims `sub` (user id) and `teams` (team ids),
 * from `Authorization: Bearer …`, or on the WebSocket upgrade from `?access_token=…` because
 * browsers cannot set headers on a WebSocket.
 */
export function jwtAuthenticator (secret: string): (request: FastifyRequest) => Promise<Principal | null> {
  const key = new TextEncoder().encode(secret)
  return async (request) => {
    const token = bearerToken(request)
    if (token === undefined) return null
    try {
      const { payload } = await jwtVerify(token, key, { algorithms: ['HS256'] })
      const { sub, teams, exp } = payload
      if (typeof sub !== 'string' || !Array.isArray(teams) || !teams.every((t) => typeof t === 'string')) return null
      return { userId: sub, teams, expiresAt: exp === undefined ? undefined : exp * 1000 }
    } catch {
      return null
    }
  }
}

function bearerToken (request: FastifyRequest): string | undefined {
  const header = request.headers.authorization
  if (typeof header === 'string' && header.startsWith('Bearer ')) return header.slice(7).trim()
  if (request.ws) {
    const query = request.query as { access_token?: unknown }
    if (typeof query.access_token === 'string') return query.access_token
  }
  return undefined
}

export async function signToken (secret: string, userId: string, teams: string[], expiresIn = '12h'): Promise<string> {
  return await new SignJWT({ teams })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(userId)
    .setIssuedAt()
    .setExpirationTime(expiresIn)
    .sign(new TextEncoder().encode(secret))
}
