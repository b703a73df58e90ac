/**
 * The `access_token` URL parameter: the bearer credential of the WebSocket upgrade, where a
 * browser cannot set an Authorization header. A URL is logged in many places a request
 * serializer never sees (a framework's 404 message, a plugin's "no handler" line), so the
 * credential is taken out of the URL once, before anything routes or logs it.
 */

export const ACCESS_TOKEN_PARAMETER = 'access_token'

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
