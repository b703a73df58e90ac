import fp from 'fastify-plugin'
import type { FastifyBaseLogger, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import { isTeamId, TEAM_ID_PATTERN } from '../protocol/constants.js'
import { isWellFormed } from '../lib/well-formed.js'
import type { Principal } from '../lib/types.js'
import { AuthRateLimitedError, ForbiddenTeamError, UnauthorizedError } from '../lib/errors.js'
import { Type } from '@sinclair/typebox'
import { func, group, integer, optionsChecker, string, type OptionsOf } from './options.js'
import { HTTP_ERRORS } from '../protocol/errors.js'
import { rateLimitHeaders, rateLimitRedisOption, registerRateLimit } from './rate-limit.js'
import { sendError } from './send-error.js'

/**
 * Supplied by the integrator: who is making this request (user id and team ids), or
 * null/undefined when the request carries no valid credentials. Used for HTTP and upgrades.
 */
export type Authenticate = (request: FastifyRequest) => Principal | null | undefined | Promise<Principal | null | undefined>

/**
 * Supplied by the integrator to let open sockets refresh their credential: who a bare
 * credential (a `refresh` frame's token) stands for, or null/undefined when it is refused.
 */
export type AuthenticateToken = (token: string) => Principal | null | undefined | Promise<Principal | null | undefined>

/** Longest user id accepted from `authenticate`: it is stored with every change and event. */
export const MAX_USER_ID_LENGTH = 128

export const AtlasAuthOptionsSchema = group({
  authenticate: func<Authenticate>({
    description: `\`(request) => { userId, teams, expiresAt? } | null | undefined\`, sync or async: who is making the request (HTTP and the upgrade); \`expiresAt\` (epoch ms): when the credential expires (the socket is closed with 4001 then, unless refreshed). A principal whose \`userId\` is not a non-empty well-formed string of at most ${MAX_USER_ID_LENGTH} characters, or with a team id outside \`${TEAM_ID_PATTERN}\`, is refused with \`401\` (and a warning that names no value).`
  }),
  authenticateToken: Type.Optional(func<AuthenticateToken>({
    defaultText: 'unset',
    description: '`(token) => { userId, teams, expiresAt? } | null | undefined`, sync or async: who a bare credential stands for, for a `refresh` frame on an open socket (the SDK sends one before `expiresAt` when it has `getToken`). Unset: `refresh` is answered `refresh_unsupported` and clients reconnect instead. A refused token, one that throws, an invalid principal or one for another user closes the socket with 4001; teams the new principal lacks are unsubscribed (`unsubscribed` reason `revoked`).'
  })),
  maxFailedAuthPerIp: Type.Optional(integer({
    allowZero: true,
    default: 100,
    description: 'Failed authentications (no credential, or refused; a refused `refresh` on a socket counts too) one client IP may make per `failedAuthWindowMs`; past it, that IP\'s requests needing a credential (HTTP and the upgrade) get `429` `AUTH_RATE_LIMITED` with `Retry-After` **without `authenticate` running**, and its refreshes are refused unchecked, until the window ends. Clients with valid tokens never fail, and a client whose token expired retries with backoff (a few attempts a minute), so 100 a minute is met only by guessing; it caps a guesser at 100 credentials a minute per address. `0`: no limit. Set Fastify\'s `trustProxy` behind a proxy, or all clients share the proxy\'s address.'
  })),
  failedAuthWindowMs: Type.Optional(integer({ default: 60_000, description: 'Window of `maxFailedAuthPerIp`, in ms (fixed, from the first failure).' })),
  rateLimitRedis: rateLimitRedisOption('As for `atlasTaskRoutes`: failures counted across instances. Only failures touch Redis; the check before `authenticate` is in memory.'),
  unauthorizedMessage: Type.Optional(string({
    pattern: /^[^\x00-\x1f\x7f]*$/,
    default: HTTP_ERRORS.UNAUTHORIZED.message,
    description: 'The `message` of the `401` `UNAUTHORIZED` body (and of close code 4001\'s reason): say what your clients must send, e.g. `\'An X-Api-Key header is required\'` or `\'Sign in first\'`.'
  })),
  wwwAuthenticate: Type.Optional(string({
    allowEmpty: true,
    // A header value: no control characters (CR/LF would split the response).
    pattern: /^[^\x00-\x1f\x7f]*$/,
    default: 'Bearer',
    description: 'The `WWW-Authenticate` header of a `401` (RFC 9110 §11.6.1: a challenge for your scheme, e.g. `\'Bearer realm="atlas"\'` or `\'ApiKey\'`); `\'\'`: none (cookie sessions have no standard challenge).'
  })),
  forbiddenTeamMessage: Type.Optional(string({
    default: HTTP_ERRORS.FORBIDDEN_TEAM.message.replace('%s', '{teamId}'),
    description: 'The `message` of a `403` `FORBIDDEN_TEAM` body; `{teamId}` is replaced by the team\'s id.'
  }))
}, { $id: 'AtlasAuthOptions', description: 'Options of atlasAuth.' })

export type AtlasAuthOptions = OptionsOf<typeof AtlasAuthOptionsSchema>

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * Resolves the request's principal (once per request), or answers 401 (429 for an IP with
     * too many failed authentications) and returns null.
     */
    atlasRequirePrincipal (request: FastifyRequest, reply: FastifyReply): Promise<Principal | null>
    /**
     * Resolves the request's principal (once per request) without answering: the refusal, with
     * the headers it goes with, is returned for the caller to send or to tell another way.
     */
    atlasResolvePrincipal (request: FastifyRequest): Promise<PrincipalOrRefusal>
    /**
     * `authenticateToken` with the principal checked as `authenticate`'s is, for a refresh from
     * address `ip`: refused at once while `ip` is blocked, and a refusal counts as a failed
     * authentication of `ip`. Never rejects. Undefined without `authenticateToken`.
     */
    atlasCheckToken: ((token: string, ip: string) => Promise<Principal | null>) | undefined
  }
  interface FastifyRequest {
    atlasPrincipal: Principal | null
  }
}

/** A principal, or why there is none: an error of the catalogue (401, or 429 for a blocked IP) and its headers. */
export type PrincipalOrRefusal =
  | { principal: Principal, refusal?: undefined }
  | { principal?: undefined, refusal: { statusCode: number, code: string, message: string }, headers: Record<string, string> }

/** The host's wording of the refusals, read by requireTeam wherever it is called. */
const kReplies = Symbol('atlas.authReplies')
interface Replies { forbiddenTeam: (teamId: string) => string }

const NAME = 'atlas-auth'
/** IPs remembered as blocked at once; the oldest is forgotten first (it only loses its block early). */
const MAX_BLOCKED_IPS = 10_000

const checkOptions = optionsChecker(NAME, AtlasAuthOptionsSchema)

const authPlugin: FastifyPluginAsync<AtlasAuthOptions> = async (fastify, rawOptions) => {
  const options = checkOptions(rawOptions)
  const { authenticate, maxFailedAuthPerIp: maxFailures, failedAuthWindowMs: windowMs } = options

  // Failures are counted by @fastify/rate-limit (in Redis when configured, so every instance
  // adds to one count); an IP found over the limit is remembered here until its window ends, so
  // the check before `authenticate` costs no round trip on any request.
  let countFailure: ((ip: string) => Promise<{ exceeded: boolean, ttlMs: number }>) | undefined
  if (maxFailures > 0) {
    await fastify.register(async (scope) => {
      await registerRateLimit(scope, NAME, options.rateLimitRedis, 'atlas-auth-failures:')
      const limiter = scope.createRateLimit({ max: maxFailures, timeWindow: windowMs, keyGenerator: (request) => request.ip })
      // Counted by address alone: a refused refresh has no request of its own, only its socket's address.
      countFailure = async (ip) => {
        const result = await limiter({ ip, routeOptions: { config: {} } } as unknown as FastifyRequest)
        return result.isAllowed ? { exceeded: false, ttlMs: 0 } : { exceeded: result.isExceeded, ttlMs: result.ttl }
      }
    })
  }
  const blockedUntil = new Map<string, number>()
  /** When `ip` is blocked, until when (epoch ms); undefined when it is not. */
  const blockedAt = (ip: string): number | undefined => {
    const until = blockedUntil.get(ip)
    if (until === undefined) return undefined
    if (until > Date.now()) return until
    blockedUntil.delete(ip)
    return undefined
  }
  /** Counts a failed authentication of `ip`; when that puts it over the limit, blocks it and says until when. */
  const failed = async (ip: string): Promise<number | undefined> => {
    if (countFailure === undefined) return undefined
    const { exceeded, ttlMs } = await countFailure(ip)
    if (!exceeded) return undefined
    const until = Date.now() + ttlMs
    if (blockedUntil.size >= MAX_BLOCKED_IPS) blockedUntil.delete(blockedUntil.keys().next().value as string)
    blockedUntil.set(ip, until)
    return until
  }

  const blockedRefusal = (until: number): PrincipalOrRefusal => {
    const retryAfter = Math.max(1, Math.ceil((until - Date.now()) / 1000))
    return { refusal: new AuthRateLimitedError(retryAfter), headers: rateLimitHeaders(maxFailures, retryAfter) }
  }
  const unauthorized: PrincipalOrRefusal = {
    refusal: { statusCode: 401, code: new UnauthorizedError().code, message: options.unauthorizedMessage },
    headers: options.wwwAuthenticate === '' ? {} : { 'www-authenticate': options.wwwAuthenticate }
  }
  const forbiddenTeam = options.forbiddenTeamMessage
  const replies: Replies = { forbiddenTeam: (teamId) => forbiddenTeam.replaceAll('{teamId}', teamId) }

  const resolvePrincipal = async (request: FastifyRequest): Promise<PrincipalOrRefusal> => {
    if (request.atlasPrincipal !== null) return { principal: request.atlasPrincipal }
    const blocked = blockedAt(request.ip)
    if (blocked !== undefined) return blockedRefusal(blocked)
    let principal: Principal | null | undefined
    try {
      principal = await authenticate(request)
    } catch (err) {
      // An authenticator that throws is treated as "not authenticated", never as a 500 that
      // would tell an attacker which tokens reach deeper code.
      request.log.warn({ err }, 'atlas: authenticate threw; answering 401')
      principal = null
    }
    const valid = acceptable(principal, request.log, 'authenticate returned an invalid principal; answering 401')
    if (valid !== null) {
      request.atlasPrincipal = valid
      return { principal: valid }
    }
    const blockedNow = await failed(request.ip)
    return blockedNow === undefined ? unauthorized : blockedRefusal(blockedNow)
  }

  const { authenticateToken } = options
  const checkToken = authenticateToken === undefined
    ? undefined
    : async (token: string, ip: string): Promise<Principal | null> => {
      // A refused refresh closes its socket, but the client may reconnect and try the next
      // credential: refreshes count, per address, with the upgrades' and requests' failures.
      if (blockedAt(ip) !== undefined) return null
      let principal: Principal | null | undefined
      try {
        principal = await authenticateToken(token)
      } catch (err) {
        fastify.log.warn({ err }, 'atlas: authenticateToken threw; refusing the refresh')
        principal = null
      }
      const valid = acceptable(principal, fastify.log, 'authenticateToken returned an invalid principal; refusing the refresh')
      if (valid === null) await failed(ip)
      return valid
    }

  fastify.decorateRequest('atlasPrincipal', null)
  fastify.decorate('atlasCheckToken', checkToken)
  fastify.decorate(kReplies, replies)
  fastify.decorate('atlasResolvePrincipal', resolvePrincipal)
  fastify.decorate('atlasRequirePrincipal', async (request: FastifyRequest, reply: FastifyReply) => {
    const result = await resolvePrincipal(request)
    if (result.principal !== undefined) return result.principal
    await sendError(reply.headers(result.headers), result.refusal)
    return null
  })
}

/**
 * The principal the host's hook returned when the suite can take it, else null; an invalid one
 * is logged with what is wrong (`refusing` says what happens), never with its values: they may
 * be whatever the credential carried.
 */
function acceptable (principal: Principal | null | undefined, log: FastifyBaseLogger, refusing: string): Principal | null {
  if (principal == null) return null
  const problem = principalProblem(principal)
  if (problem === undefined) return principal
  log.warn({ problem }, `atlas: ${refusing}`)
  return null
}

/**
 * What is wrong with a principal the integrator's `authenticate` returned, or undefined. Its ids
 * become keys, log fields, stored values and Redis channel names: a team id `*` would subscribe
 * to a pattern-looking channel, an empty user id would make changes nobody made.
 */
function principalProblem (principal: Principal): string | undefined {
  const { userId, teams } = principal as { userId?: unknown, teams?: unknown }
  if (typeof userId !== 'string' || userId === '') return 'userId is not a non-empty string'
  if (userId.length > MAX_USER_ID_LENGTH) return `userId is longer than ${MAX_USER_ID_LENGTH} characters`
  if (!isWellFormed(userId)) return 'userId is not well-formed UTF-16'
  if (!Array.isArray(teams)) return 'teams is not an array'
  const bad = teams.findIndex((team) => !isTeamId(team))
  if (bad !== -1) return `teams[${bad}] does not match the team id pattern`
  return undefined
}

export const atlasAuth = fp(authPlugin, { fastify: '5.x', name: NAME })
export default atlasAuth

/** Answers 403 unless the principal belongs to `teamId`. Returns whether the request may go on. */
export async function requireTeam (principal: Principal, teamId: string, reply: FastifyReply): Promise<boolean> {
  if (principal.teams.includes(teamId)) return true
  await sendError(reply, forbiddenTeamError(reply.server, teamId))
  return false
}

/** The 403 of a team the principal is not in, worded as the host set it (atlasAuth's `forbiddenTeamMessage`). */
export function forbiddenTeamError (server: object, teamId: string): { statusCode: number, code: string, message: string } {
  const error = new ForbiddenTeamError(teamId)
  const replies = (server as { [kReplies]?: Replies })[kReplies]
  return replies === undefined ? error : { statusCode: error.statusCode, code: error.code, message: replies.forbiddenTeam(teamId) }
}
