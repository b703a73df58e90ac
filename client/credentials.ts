/** Returns the credential to send now, or null/undefined for none (cookie sessions). */
export type GetToken = () => string | null | undefined | Promise<string | null | undefined>

export interface CredentialOptions {
  /** A bearer token used as it is on every connect and request. */
  token?: string
  /**
   * Asked for the bearer token before every connect and every HTTP request, again after the
   * server refused one (returning the token just refused stops the client), and ahead of the
   * credential's expiry, to refresh it on the open socket (see `refreshDelay`): return a token
   * that outlives the current one then. Exclusive with `token`.
   */
  getToken?: GetToken
}

/**
 * Where the credential comes from. Neither option: none is sent (the server authenticates the
 * request some other way, e.g. a session cookie). An empty string counts as none, so a missing
 * value never goes out as `Bearer ` or `Bearer undefined`.
 */
export class Credential {
  readonly #token: string | undefined
  readonly #getToken: GetToken | undefined

  constructor (options: CredentialOptions, who: string) {
    const { token, getToken } = options
    if (token !== undefined && getToken !== undefined) throw new TypeError(`${who}: pass token or getToken, not both`)
    if (typeof token === 'function') throw new TypeError(`${who}: token must be a string; pass a function as getToken`)
    if (token !== undefined && typeof token !== 'string') throw new TypeError(`${who}: token must be a string (got ${typeof token})`)
    if (getToken !== undefined && typeof getToken !== 'function') throw new TypeError(`${who}: getToken must be a function (got ${typeof getToken})`)
    this.#token = token === '' ? undefined : token
    this.#getToken = getToken
  }

  /** Whether a refused credential can be replaced by a fresh one. */
  get renewable (): boolean { return this.#getToken !== undefined }

  /** The credential to send now; undefined: none. */
  async current (): Promise<string | undefined> {
    if (this.#getToken === undefined) return this.#token
    const value = await this.#getToken()
    if (value === null || value === undefined || value === '') return undefined
    if (typeof value !== 'string') throw new TypeError(`atlas client: getToken returned a ${typeof value}, not a string`)
    return value
  }
}

/** A refresh is planned at least this long before the credential expires (when the lifetime allows: see `refreshDelay`). */
export const REFRESH_LEAD_MS = 10_000
/** Never sooner than this after the previous plan: a skewed clock must not make refreshes run back to back. */
export const REFRESH_MIN_DELAY_MS = 1_000
/** Up to this fraction of the delay is taken off at random. */
export const REFRESH_JITTER = 0.1
/** setTimeout's longest delay (about 24.8 days): a credential that lives longer is refreshed then, early. */
const MAX_TIMER_MS = 2 ** 31 - 1

/**
 * How long to wait before refreshing a credential that expires in `remainingMs` (by this
 * machine's clock; the server's `expiresAt` minus now): 80% of the time left, or the time left
 * minus REFRESH_LEAD_MS (10 s) if that is sooner, but never less than half the time left; then
 * up to 10% sooner at random, so clients whose tokens were issued together do not all call
 * their token endpoint at the same moment. Undefined (no refresh: the client reconnects at
 * expiry instead) when the delay would be under REFRESH_MIN_DELAY_MS (1 s): the credential
 * expires too soon, or this clock runs ahead of the server's by about the token's lifetime.
 *
 * A 1 h token is refreshed about 48 min in (12 min left), a 60 s one at 48 s, a 20 s one at
 * 10 s, a 5 s one at 2.5 s (each up to 10% sooner).
 */
export function refreshDelay (remainingMs: number, random: () => number = Math.random): number | undefined {
  if (!Number.isFinite(remainingMs)) return undefined
  const target = Math.max(remainingMs / 2, Math.min(remainingMs * 0.8, remainingMs - REFRESH_LEAD_MS))
  const delayMs = Math.floor(target * (1 - REFRESH_JITTER * random()))
  if (delayMs < REFRESH_MIN_DELAY_MS) return undefined
  return Math.min(delayMs, MAX_TIMER_MS)
}
