/**
 * The `access_token` URL parameter: the bearer credential of the WebSocket upgrade, where a
 * browser cannot set an Authorization header. A URL is logged in many places a request
 * serializer never sees (a framework's 404 message, a plugin's "no handler" line), so the
 * credential is taken out of the URL once, before anything routes or logs it.
 */

import type { IncomingMessage } from 'node:http'
import { BEARER_SUBPROTOCOL_PREFIX } from '../protocol/constants.js'

export const ACCESS_TOKEN_PARAMETER = 'access_token'

const BEARER = /^Bearer +(\S+) *$/i

/** The token of an `Authorization: Bearer <token>` header (RFC 6750 §2.1; the scheme's case does not matter). */
export function bearerOf (authorization: string | undefined): string | undefined {
  if (authorization === undefined) return undefined
  return BEARER.exec(authorization)?.[1]
}

const PROTOCOL_HEADER = 'sec-websocket-protocol'

/**
 * Takes the `base64url.bearer.atlas.` entries out of an upgrade's `Sec-WebSocket-Protocol`
 * header (and its raw headers), leaving the others in order, and returns the credential: the
 * decoded value when there is exactly one such entry, undefined otherwise (two are ambiguous,
 * as for the query parameter).
 */
export function takeSubprotocolToken (request: IncomingMessage): string | undefined {
  const header = request.headers[PROTOCOL_HEADER]
  if (header === undefined || !header.includes(BEARER_SUBPROTOCOL_PREFIX)) return undefined
  const values: string[] = []
  const kept: string[] = []
  for (const entry of header.split(',')) {
    const name = entry.trim()
    if (name.startsWith(BEARER_SUBPROTOCOL_PREFIX)) values.push(name.slice(BEARER_SUBPROTOCOL_PREFIX.length))
    else if (name !== '') kept.push(name)
  }
  const remaining = kept.join(', ')
  if (remaining === '') delete request.headers[PROTOCOL_HEADER]
  else request.headers[PROTOCOL_HEADER] = remaining
  const raw = request.rawHeaders
  for (let i = raw.length - 2; i >= 0; i -= 2) {
    if (raw[i].toLowerCase() !== PROTOCOL_HEADER) continue
    if (remaining === '') raw.splice(i, 2)
    else raw[i + 1] = remaining
  }
  if (values.length !== 1 || values[0] === '' || !/^[A-Za-z0-9_-]+$/.test(values[0])) return undefined
  const token = Buffer.from(values[0], 'base64url').toString('utf8')
  return token === '' ? undefined : token
}

export interface TakenAccessToken {
  /** The URL with every `access_token` component gone from the query, and its value gone from the path. */
  url: string
  /**
   * The credential: the value of the query's `access_token` parameter when there is exactly one
   * and it is not empty. A repeated parameter is ambiguous and yields none (RFC 6750 §3.1).
   */
  token: string | undefined
}

const PATH_COMPONENT = /(?=[/;])/
const QUERY_COMPONENT = /(?=[?#;&])/

/**
 * Splits the credential off a request URL. A component is the credential's when its name,
 * percent-decoded the way a query parser decodes it, is `access_token`: `%61ccess_token=` and
 * `access%5Ftoken=` count, since the query parser would read them as the same parameter. The
 * query starts at the first `?` or `#` (the router treats both as its start), and `&`, `;`,
 * `#` and `?` all separate components in it: a value never runs on into a following
 * `access_token=`. In the path, only the value goes, so the URL still routes where it did.
 */
export function takeAccessToken (url: string): TakenAccessToken {
  // Every request passes here: most carry neither the name nor an escape.
  if (!url.includes(ACCESS_TOKEN_PARAMETER) && !url.includes('%')) return { url, token: undefined }
  const queryStart = url.search(/[?#]/)
  const path = queryStart === -1 ? url : url.slice(0, queryStart)
  const query = queryStart === -1 ? '' : url.slice(queryStart)

  const keptPath = path.split(PATH_COMPONENT).map((component) => {
    const separator = /^[/;]/.test(component) ? component[0] : ''
    const body = component.slice(separator.length)
    return nameOf(body) === ACCESS_TOKEN_PARAMETER && readable(body).includes('=')
      ? `${separator}${ACCESS_TOKEN_PARAMETER}=`
      : component
  })

  const values: string[] = []
  const keptQuery: string[] = []
  for (const component of query === '' ? [] : query.split(QUERY_COMPONENT)) {
    const body = component.slice(1)
    if (nameOf(body) !== ACCESS_TOKEN_PARAMETER) {
      keptQuery.push(component)
      continue
    }
    const equals = body.indexOf('=')
    values.push(equals === -1 ? '' : decodeLikeQueryParser(body.slice(equals + 1)))
  }
  // The first kept component takes the query's own opening character: after `?access_token=…&a=1`
  // the `a` must stay in the query, not join the path.
  if (keptQuery.length > 0 && keptQuery[0][0] !== query[0]) keptQuery[0] = query[0] + keptQuery[0].slice(1)

  const token = values.length === 1 && values[0] !== '' ? values[0] : undefined
  return { url: keptPath.join('') + keptQuery.join(''), token }
}

/** A component's name: its readable text up to the first `=`, escaped or not (`access_token%3D…` goes, too). */
function nameOf (component: string): string {
  const text = readable(component)
  const equals = text.indexOf('=')
  return equals === -1 ? text : text.slice(0, equals)
}

/**
 * `+` as a space and every ASCII escape decoded, one by one: a malformed escape elsewhere in
 * the component does not hide the name (the query parser decodes name and value apart, so
 * `%61ccess_token=x%zz` is still its `access_token`). No escape of a non-ASCII byte can spell
 * an ASCII name, so nothing the parser would read as `access_token` is missed.
 */
function readable (component: string): string {
  const spaced = component.includes('+') ? component.replaceAll('+', ' ') : component
  return spaced.includes('%') ? spaced.replace(/%([0-7][0-9a-f])/gi, (_, hex: string) => String.fromCharCode(parseInt(hex, 16))) : spaced
}

/** `+` is a space, then percent-decoding; malformed escapes leave the text as it is (as fast-querystring does). */
function decodeLikeQueryParser (text: string): string {
  const spaced = text.includes('+') ? text.replaceAll('+', ' ') : text
  if (!spaced.includes('%')) return spaced
  try {
    return decodeURIComponent(spaced)
  } catch {
    return spaced
  }
}
