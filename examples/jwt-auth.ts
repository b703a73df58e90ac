import { SignJWT, jwtVerify } from 'jose'
import type { FastifyRequest } from 'fastify'
import { isTeamId } from '../protocol/constants.js'
import type { Principal } from '../lib/types.js'
import { accessTokenOf } from '../plugins/credentials.js'

export interface JwtAuthOptions {
  /**
   * Longest lifetime accepted, in seconds: `exp` minus `iat` (or minus now, when `iat` is absent
   * or in the future). Default 24 h: a day's work on one token (the demo tokens last 12 h),
   * and a leaked token is worth a day at most.
   */
  maxLifetimeSeconds?: number
}

/** Default of `JwtAuthOptions.maxLifetimeSeconds`. */
export const MAX_TOKEN_LIFETIME_SECONDS = 24 * 3600

/**
 * The example's authenticate: HS256 JWTs with claims `sub` (user id) and `teams` (team ids),
 * wherever `accessTokenOf` finds one: `Authorization: Bearer …`, or on the WebSocket upgrade the
 * browser's subprotocol entry or `?access_token=…`.
 */
export function jwtAuthenticator (secret: string, options: JwtAuthOptions = {}): (request: FastifyRequest) => Promise<Principal | null> {
  const verify = jwtVerifier(secret, options)
  return async (request) => {
    const token = accessTokenOf(request)
    return token === undefined ? null : await verify(token)
  }
}

/**
 * The same check of a bare token: the example's `authenticateToken`, for `refresh` frames.
 *
 * A token is refused (null) unless it carries `exp`, lives at most `maxLifetimeSeconds`, has a
 * non-empty `sub` and only team ids of the protocol's pattern: a token that never expires
 * cannot be taken back, and team ids end up in Redis channel names.
 */
export function jwtVerifier (secret: string, options: JwtAuthOptions = {}): (token: string) => Promise<Principal | null> {
  const maxLifetime = options.maxLifetimeSeconds ?? MAX_TOKEN_LIFETIME_SECONDS
  if (!Number.isSafeInteger(maxLifetime) || maxLifetime <= 0) throw new TypeError(`jwtAuthenticator: maxLifetimeSeconds must be a positive integer (got ${maxLifetime})`)
  // Imported once: given raw bytes, jose imports the HMAC key again on every verify.
  const key = crypto.subtle.importKey('raw', new TextEncoder().encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['verify'])
  // A client sends the same token on every request until it expires: its signature is checked
  // once, and the result reused until the token's own expiry.
  const verified = new Map<string, Principal>()
  return async (token) => {
    const known = verified.get(token)
    if (known !== undefined) {
      if ((known.expiresAt ?? Infinity) > Date.now()) return known
      verified.delete(token)
    }
    try {
      const { payload } = await jwtVerify(token, await key, { algorithms: ['HS256'] })
      const { sub, teams, exp, iat } = payload
      if (typeof sub !== 'string' || sub === '' || !Array.isArray(teams) || !teams.every(isTeamId)) return null
      // jwtVerify checked that exp, when present, has not passed; it must be present here.
      if (typeof exp !== 'number') return null
      const nowSeconds = Date.now() / 1000
      const issuedAt = typeof iat === 'number' ? Math.min(iat, nowSeconds) : nowSeconds
      if (exp - issuedAt > maxLifetime) return null
      const principal: Principal = { userId: sub, teams, expiresAt: exp * 1000 }
      if (verified.size >= VERIFIED_CACHE_SIZE) verified.delete(verified.keys().next().value as string)
      verified.set(token, principal)
      return principal
    } catch {
      return null
    }
  }
}

const VERIFIED_CACHE_SIZE = 10_000


export async function signToken (secret: string, userId: string, teams: string[], expiresIn = '12h'): Promise<string> {
  return await new SignJWT({ teams })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(userId)
    .setIssuedAt()
    .setExpirationTime(expiresIn)
    .sign(new TextEncoder().encode(secret))
}
