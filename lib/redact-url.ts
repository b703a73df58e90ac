/**
 * A connection URL as it may be logged or shown in an error: its password, and any query
 * parameter that names one, replaced by `***` (Redis and PostgreSQL URLs alike). The password
 * is taken as everything between the user's `:` and the last `@`, not as a URL parser reads
 * it: a password with an unencoded `/`, `#` or `@` makes the URL unparsable, or parsed with
 * part of the password as its host or fragment, and must still not be shown.
 */
export function redactUrl (url: string): string {
  let masked = url
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(url)
  const at = url.lastIndexOf('@')
  if (scheme !== null && at > scheme[0].length) {
    const userinfo = url.slice(scheme[0].length, at)
    const colon = userinfo.indexOf(':')
    if (colon !== -1) masked = `${scheme[0]}${userinfo.slice(0, colon)}:***${url.slice(at)}`
  } else if (scheme === null && at !== -1) {
    // Not even a scheme: hide whatever precedes the '@'.
    masked = `***${url.slice(at)}`
  }
  try {
    const parsed = new URL(masked)
    let changed = false
    for (const key of [...parsed.searchParams.keys()]) {
      if (/pass/i.test(key)) {
        parsed.searchParams.set(key, '***')
        changed = true
      }
    }
    return changed ? parsed.href.replace('%2A%2A%2A@', '***@') : masked
  } catch {
    return masked
  }
}
