/**
 * A connection URL as it may be logged or shown in an error: its password, and any query
 * parameter that names one, replaced by `***` (Redis and PostgreSQL URLs alike).
 */
export function redactUrl (url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password !== '') parsed.password = '***'
    for (const key of [...parsed.searchParams.keys()]) {
      if (/pass/i.test(key)) parsed.searchParams.set(key, '***')
    }
    return parsed.href
  } catch {
    // Not a URL Node can parse (ioredis is more lenient): hide whatever precedes an '@'.
    return url.replace(/\/\/[^/]*@/, '//***@')
  }
}
