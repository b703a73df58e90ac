/**
 * Run as a child process by test/plugins.test.ts: starts the example API (with Redis when a URL
 * is given), delivers one mutation to a live socket, closes the app, and must then exit on its
 * own: it never calls process.exit, so any timer, socket or connection left behind keeps it
 * alive and fails the test. Prints one JSON line with what happened.
 */
import { request } from 'node:http'
import WebSocket from 'ws'
import { buildExampleApp } from '../../examples/app.js'
import { signToken } from '../../examples/jwt-auth.js'

const [databasePath, redisUrl = ''] = process.argv.slice(2)
const secret = 'close-child-secret'
const app = await buildExampleApp({ databasePath, redisUrl: redisUrl === '' ? undefined : redisUrl, jwtSecret: secret })
console.error('built');await app.listen({ port: 0, host: '127.0.0.1' })
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
})
console.error('listening');await frame('subscribed');console.error('subscribed')

// A one-off connection (no keep-alive agent), so the client side leaves nothing open either.
const status = await new Promise<number | undefined>((resolve, reject) => {
  const req = request({ port, host: '127.0.0.1', method: 'POST', path: '/teams/red/tasks', agent: false, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' } }, (res) => {
    res.resume()
    res.once('end', () => { resolve(res.statusCode) })
  })
  req.once('error', reject)
  req.end(JSON.stringify({ title: 'before close' }))
})
console.error('posted', status);const event = await frame('task.created');console.error('event')

await app.close();console.error('closed')
console.log(JSON.stringify({ status, seq: event.seq, closeCode: await closeCode }))
// Diagnostics only: unref'd, so it never keeps the process alive itself.
setTimeout(() => { console.error('still alive after close:', process.getActiveResourcesInfo()) }, 3000).unref()
