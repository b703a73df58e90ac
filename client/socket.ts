import { BEARER_SUBPROTOCOL_PREFIX, SUBPROTOCOL } from '../protocol/constants.js'

/**
 * The part of the WebSocket API the SDK uses. The browser's WebSocket and the `ws` package's
 * both have it (ws hands text frames to `onmessage` as strings, like a browser).
 */
export interface WebSocketLike {
  readonly readyState: number
  onopen: Handler<unknown> | null
  onmessage: Handler<{ data: unknown }> | null
  onclose: Handler<{ code: number, reason: string }> | null
  onerror: Handler<unknown> | null
  send (data: string): void
  close (code?: number, reason?: string): void
}

/**
 * An event handler property. Its parameter is compared both ways (as a method's is), so that the
 * DOM's WebSocket, whose handlers take an `Event`, `MessageEvent` or `CloseEvent`, is a
 * WebSocketLike: with the default one-way check, `WebSocket: WebSocket` would not compile.
 */
type Handler<E> = { handle (event: E): void }['handle']

/** The third constructor argument of a class that can set headers on the upgrade (the `ws` package's options). */
export interface WebSocketUpgradeOptions {
  headers?: Record<string, string>
}

/**
 * A WebSocket class: the browser's (`new WebSocket(url, protocols)`) or the `ws` package's
 * (`new WebSocket(url, protocols, { headers })`).
 */
export interface WebSocketConstructor {
  new (url: string, protocols?: string | string[], options?: WebSocketUpgradeOptions): WebSocketLike
  /**
   * Whether the class sends the `headers` of its third argument with the upgrade request.
   * `true`: the SDK sends the credential as `Authorization: Bearer …`; `false`: as a
   * `Sec-WebSocket-Protocol` entry, as in a browser. Absent: `true` for the `ws` package's class
   * (recognised by its `terminate` method, which browsers' and Node 22's built-in WebSocket lack),
   * else `false`. Set it on a wrapper class of your own.
   */
  readonly supportsHeaders?: boolean
}

export const OPEN = 1

/**
 * The WebSocket class to use: the one given; in Node, the `ws` package (it can send the
 * credential in a header), else the global one; elsewhere the global one (browsers), else `ws`.
 * The import is dynamic and its specifier a variable so that browsers and bundlers never try to
 * load a Node-only module.
 */
export async function resolveWebSocket (given?: WebSocketConstructor): Promise<WebSocketConstructor> {
  if (given !== undefined) return given
  const global = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket
  const inNode = typeof (globalThis as { process?: { versions?: { node?: unknown } } }).process?.versions?.node === 'string'
  if (global !== undefined && !inNode) return global
  const found = await importWs()
  if (found !== undefined) return found
  if (global !== undefined) return global
  throw new Error('atlas client: no WebSocket here; install the "ws" package or pass the WebSocket option')
}

let wsClass: Promise<WebSocketConstructor | undefined> | undefined

async function importWs (): Promise<WebSocketConstructor | undefined> {
  wsClass ??= (async () => {
    const specifier = 'ws'
    try {
      const mod = await import(specifier) as { WebSocket?: WebSocketConstructor, default?: WebSocketConstructor }
      return mod.WebSocket ?? mod.default
    } catch {
      return undefined
    }
  })()
  return await wsClass
}

/** Whether sockets of this class can carry the credential in an Authorization header. */
export function supportsHeaders (WebSocketClass: WebSocketConstructor): boolean {
  if (typeof WebSocketClass.supportsHeaders === 'boolean') return WebSocketClass.supportsHeaders
  const prototype = (WebSocketClass as { prototype?: { terminate?: unknown } }).prototype
  return typeof prototype?.terminate === 'function'
}

/**
 * Opens a socket offering the protocol's subprotocol first, with the credential (if any) where
 * the class can put it: an Authorization header, or else (browsers, which cannot set headers on
 * a WebSocket) a second `Sec-WebSocket-Protocol` entry that the server reads and never selects.
 * Never in the URL: URLs end up in logs, proxies and browser history.
 */
export function openSocket (WebSocketClass: WebSocketConstructor, url: string, token: string | undefined): WebSocketLike {
  if (supportsHeaders(WebSocketClass)) {
    return token === undefined
      ? new WebSocketClass(url, [SUBPROTOCOL])
      : new WebSocketClass(url, [SUBPROTOCOL], { headers: { authorization: `Bearer ${token}` } })
  }
  return new WebSocketClass(url, token === undefined ? [SUBPROTOCOL] : [SUBPROTOCOL, BEARER_SUBPROTOCOL_PREFIX + base64url(token)])
}

/** The token's UTF-8 bytes in base64url without padding: only characters a subprotocol entry may hold. */
export function base64url (text: string): string {
  const bytes = new TextEncoder().encode(text)
  let binary = ''
  // Char by char: spreading a long token's bytes into one call could overflow the stack.
  for (const byte of bytes) binary += String.fromCharCode(byte)
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
}
