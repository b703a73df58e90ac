/**
 * The floor of the request-cost bench: node:http alone answering the bench's POST with a small
 * JSON body, no framework, no database, no broker. Whatever a request costs here at a given
 * rate, every server on this machine pays at least that much.
 */
import { createServer } from 'node:http'

const port = Number(process.env.PORT ?? 0)
const server = createServer((request, response) => {
  if (request.method === 'GET') {
    response.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}')
    return
  }
  // The body is read to its end, as a real handler must, before answering.
  request.resume()
  request.once('end', () => { response.writeHead(201, { 'content-type': 'application/json' }).end('{"ok":true}') })
})
server.listen(port, '127.0.0.1')

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => { server.close(() => process.exit(0)); server.closeAllConnections() })
}
