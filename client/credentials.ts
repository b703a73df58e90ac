/** Returns the credential to send now, or null/undefined for none (cookie sessions). */
export type GetToken = () => string | null | undefined | Promise<string | null | undefined>

export interface CredentialOptions {
  /** A bearer token used as it is on every connect and request. */
  token?: string
  /**
   * Asked for the bearer token before every connect and every HTTP request, and again after the
   * server refused one; returning the token just refused stops the client. Exclusive with `token`.
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
