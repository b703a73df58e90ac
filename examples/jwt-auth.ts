import { SignJWT, jwtVerify } from 'jose'
import type { FastifyRequest } from 'fastify'
import type { Principal } from '../lib/types.js'

/**
 * The example's authenticate: HS256 JWTs with claims `sub` (user id) and `teams` (team ids),
 * from `Authorization: Bearer …`, or on the WebSocket upgrade from `?access_token=…` because
 * browsers cannot set headers on a WebSocket.
 */
export function jwtAuthenticator (secret: string): (request: FastifyRequest) => Promise<Principal | null> {
  // Imported once: given raw bytes, jose imports the HMAC key again on every verify.
  const key = crypto.subtle.importKey('raw', new TextEncoder().encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['verify'])
  // A client sends the same token on every request until it expires: its signature is checked
  // once, and the result reused until the token's own expiry.
  const verified = new Map<string, Principal>()
  return async (request) => {
    const token = bearerToken(request)
    if (token === undefined) return null
    const known = verified.get(token)
    if (known !== undefined) {
      if ((known.expiresAt ?? Infinity) > Date.now()) return known
      verified.delete(token)
    }
    try {
      const { payload } = await jwtVerify(token, await key, { algorithms: ['HS256'] })
      const { sub, teams, exp } = payload
      if (typeof sub !== 'string' || !Array.isArray(teams) || !teams.every((t) => typeof t === 'string')) return null
      const principal: Principal = { userId: sub, teams, expiresAt: exp === undefined ? undefined : exp * 1000 }
      if (verified.size >= VERIFIED_CACHE_SIZE) verified.delete(verified.keys().next().value as string)
      // A token without an expiry is verified every time rather than trusted forever.
      if (principal.expiresAt !== undefined) verified.set(token, principal)
      return principal
    } catch {
      return null
    }
  }
}

const VERIFIED_CACHE_SIZE = 10_000

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
