import { randomBytes } from 'node:crypto'
import { request } from 'node:http'

export interface RawOutcome {
  /** 101 when the server switched protocols (the socket is destroyed at once). */
  status: number
  body: any
}

/**
 * One request with its path sent byte for byte as given (fetch and `new URL` would normalise
 * it and drop a `#…`), optionally as a WebSocket upgrade.
 */
export async function rawRequest (
  { host, port, method, path }: { host: string, port: number, method: string, path: string },
  options: { upgrade?: boolean, headers?: Record<string, string> } = {}
): Promise<RawOutcome> {
  const upgrade = options.upgrade === true
    ? { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': randomBytes(16).toString('base64') }
    : {}
  return await new Promise<RawOutcome>((resolve, reject) => {
    const req = request({ host, port, method, path, headers: { ...upgrade, ...options.headers }, agent: false })
    req.once('upgrade', (_res, socket) => {
      socket.destroy()
      resolve({ status: 101, body: undefined })
    })
    req.once('response', (res) => {
      let text = ''
      res.setEncoding('utf8').on('data', (chunk: string) => { text += chunk }).once('end', () => {
        let body: unknown = text
        try { body = JSON.parse(text) } catch {}
        resolve({ status: res.statusCode ?? 0, body })
      })
    })
    req.once('error', reject)
    req.end()
  })
}
