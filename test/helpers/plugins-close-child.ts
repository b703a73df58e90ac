/**
 * Run as a child process by test/plugins.test.ts: starts the example API, delivers one mutation
 * to a live socket and closes the app, first with the in-process broker, then with Redis. It
 * must then exit on its own: it never calls process.exit, so any timer, socket or connection
 * either app left behind keeps it alive and fails the test. Prints one JSON line per app.
 *
 * Usage: plugins-close-child.ts <folder for the databases> <redis URL>
 */
import { request } from 'node:http'
import { join } from 'node:path'
import WebSocket from 'ws'
import { buildExampleApp } from '../../examples/app.js'
import { signToken } from '../../examples/jwt-auth.js'

const [folder, redisUrl] = process.argv.slice(2)
const secret = 'close-child-secret'

async function cycle (broker: string, databasePath: string, redis?: string): Promise<void> {
  const app = await buildExampleApp({ databasePath, redisUrl: redis, jwtSecret: secret })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const token = await signToken(secret, 'alice', ['red'])

  const socket = new WebSocket(`ws://127.0.0.1:${port}/realtime?access_token=${token}`)
  const frames: Array<{ type: string, seq?: number }> = []
  socket.on('message', (data) => { frames.push(JSON.parse(data.toString())) })
  const closeCode = new Promise<number>((resolve) => { socket.once('close', resolve) })
  const frame = async (type: string): Promise<{ type: string, seq?: number }> => await new Promise((resolve) => {
    const check = (): void => {
      const found = frames.find((f) => f.type === type)
      if (found === undefined) return
      socket.off('message', check)
      resolve(found)
    }
    socket.on('message', check)
    check()
  })
  await frame('subscribed')

  // A one-off connection (no keep-alive agent), so the client side leaves nothing open either.
  const status = await new Promise<number | undefined>((resolve, reject) => {
    const req = request({ port, host: '127.0.0.1', method: 'POST', path: '/teams/red/tasks', agent: false, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' } }, (res) => {
      res.resume()
      res.once('end', () => { resolve(res.statusCode) })
    })
    req.once('error', reject)
    req.end(JSON.stringify({ title: 'before close' }))
  })
  const event = await frame('task.created')

  await app.close()
  console.log(JSON.stringify({ broker, status, seq: event.seq, closeCode: await closeCode }))
}

await cycle('in-process', join(folder, 'in-process.db'))
await cycle('redis', join(folder, 'redis.db'), redisUrl)
// Diagnostics only: unref'd, so it never keeps the process alive itself.
setTimeout(() => { console.error('still alive after close:', process.getActiveResourcesInfo()) }, 3000).unref()
