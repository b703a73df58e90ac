/**
 * The part of the WebSocket API the SDK uses. The browser's WebSocket and the `ws` package's
 * both have it (ws hands text frames to `onmessage` as strings, like a browser).
 */
export interface WebSocketLike {
  readonly readyState: number
  onopen: ((event: unknown) => void) | null
  onmessage: ((event: { data: unknown }) => void) | null
  onclose: ((event: { code: number, reason: string }) => void) | null
  onerror: ((event: unknown) => void) | null
  send (data: string): void
  close (code?: number, reason?: string): void
}

export type WebSocketConstructor = new (url: string) => WebSocketLike

export const OPEN = 1

/**
 * The WebSocket class to use: the one given, else the global one (browsers, Node 22+), else
 * the `ws` package loaded on demand. The import is dynamic and its specifier a variable so
 * that browsers and bundlers never try to load a Node-only module.
 */
export async function resolveWebSocket (given?: WebSocketConstructor): Promise<WebSocketConstructor> {
  if (given !== undefined) return given
  const global = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket
  if (global !== undefined) return global
  const specifier = 'ws'
  try {
    const mod = await import(specifier) as { WebSocket?: WebSocketConstructor, default?: WebSocketConstructor }
    const found = mod.WebSocket ?? mod.default
    if (found !== undefined) return found
  } catch {}
  throw new Error('atlas client: no WebSocket here; install the "ws" package or pass the WebSocket option')
}
