import { createConnection, createServer, type Socket } from 'node:net'
import { once } from 'node:events'

export interface TcpProxy {
  /** `redis://127.0.0.1:<port>` of the proxy. */
  url: string
  port: number
  /**
   * On connections opened from now on: as soon as what the client has sent on the connection
   * satisfies `when`, what the server sends back is held, until the client ends its side; then
   * it is delivered. Resolves when a connection starts holding. Lets a test put a reply "in
   * flight" for as long as it needs, e.g. across a shutdown.
   */
  holdReplies (when: (sentSoFar: string) => boolean): Promise<void>
  /**
   * The server "goes away": nothing listens on the proxy's port any more (a new connection is
   * refused) and every open connection is dropped. Resolves once both hold.
   */
  cut (): Promise<void>
  /** The server is back: the proxy listens again, on the same port. */
  restore (): Promise<void>
}

/** A TCP proxy to 127.0.0.1:`targetPort` on a free port, closed when the test ends. */
export async function startTcpProxy (t: { teardown (fn: () => unknown): void }, targetPort: number): Promise<TcpProxy> {
  let arm: { when: (sent: string) => boolean, started: () => void } | undefined
  const sockets = new Set<Socket>()
  // Half-open allowed: a held reply is still delivered after the client sent its FIN.
  const server = createServer({ allowHalfOpen: true }, (client) => {
    const upstream = createConnection({ host: '127.0.0.1', port: targetPort, allowHalfOpen: true })
    sockets.add(client).add(upstream)
    const rule = arm
    let sent = ''
    let held: Buffer[] | undefined
    client.on('data', (chunk: Buffer) => {
      if (rule !== undefined && held === undefined) {
        sent += chunk.toString('latin1')
        if (rule.when(sent)) {
          held = []
          rule.started()
        }
      }
      upstream.write(chunk)
    })
    upstream.on('data', (chunk: Buffer) => {
      if (held !== undefined) held.push(chunk)
      else client.write(chunk)
    })
    let upstreamEnded = false
    client.once('end', () => {
      for (const chunk of held ?? []) client.write(chunk)
      held = undefined
      upstream.end()
      if (upstreamEnded) client.end()
    })
    upstream.once('end', () => {
      upstreamEnded = true
      if (held === undefined) client.end()
    })
    const destroy = (): void => { client.destroy(); upstream.destroy() }
    client.once('close', destroy).on('error', destroy)
    upstream.once('close', () => { if (held === undefined) destroy() }).on('error', destroy)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('proxy: no address')
  const cut = async (): Promise<void> => {
    const closed = new Promise((resolve) => server.close(resolve))
    for (const socket of sockets) socket.destroy()
    sockets.clear()
    await closed
  }
  t.teardown(cut)
  return {
    url: `redis://127.0.0.1:${address.port}`,
    port: address.port,
    holdReplies: async (when) => await new Promise<void>((resolve) => { arm = { when, started: resolve } }),
    cut,
    restore: async () => {
      server.listen(address.port, '127.0.0.1')
      await once(server, 'listening')
    }
  }
}
