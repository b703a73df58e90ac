import t, { type Test } from 'tap'
import { Socket } from 'node:net'
import * as ws from 'ws'
import { WebSocket, WebSocketServer } from 'ws'
import { backlogged, corked, SharedFrame, writeSharedFrame, type WsInternals } from '../lib/shared-frame.js'

// ws's own framing, the reference the hand-built header must match byte for byte (a named
// export of ws's ESM wrapper, a static of its CommonJS class; untyped in @types/ws).
type FrameBuilder = { frame (data: Buffer, options: { fin: boolean, opcode: number, mask: boolean, readOnly: boolean, rsv1: boolean }): Buffer[] }
const Sender = ((ws as unknown as { Sender?: FrameBuilder }).Sender ?? (ws.default as unknown as { Sender: FrameBuilder }).Sender)

t.test('a shared frame is exactly the text frame ws would build, at every length class', async (t) => {
  for (const text of ['', 'x'.repeat(125), 'x'.repeat(126), 'x'.repeat(65_535), 'x'.repeat(65_536), 'x'.repeat(70_000), 'é€😀'.repeat(5000)]) {
    const payload = Buffer.from(text)
    const expected = Buffer.concat(Sender.frame(payload, { fin: true, opcode: 1, mask: false, readOnly: true, rsv1: false }))
    const frame = new SharedFrame(text)
    t.ok(frame.bytes.equals(expected), `${payload.length} bytes`)
    t.ok(frame.payload.equals(payload), `payload view of ${payload.length} bytes`)
  }
})

// writeSharedFrame reaches into ws's internals (package.json pins ws to a minor version). These
// tests run them on the installed ws: an upgrade that renames, removes or changes the meaning
// of one of them fails here, instead of silently leaving the fast path or reordering frames.

interface Pair {
  /** The server side of the connection, as the realtime server holds it. */
  server: WebSocket
  internals: WsInternals
  /** Every chunk ws or writeSharedFrame wrote to the server's TCP socket, in order. */
  writes: Buffer[]
  /** Calls of the sender's own send (ws framing the message itself). */
  senderSends: number
  /** Resolves with the next `count` messages the client receives, as text. */
  nextMessages (count: number): Promise<string[]>
}

async function connect (t: Test, perMessageDeflate: boolean): Promise<Pair> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: perMessageDeflate ? { threshold: 0 } : false })
  await new Promise<void>((resolve) => wss.once('listening', resolve))
  const accepted = new Promise<WebSocket>((resolve) => wss.once('connection', resolve))
  const { port } = wss.address() as { port: number }
  const client = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate })
  t.teardown(async () => {
    client.terminate()
    await new Promise((resolve) => wss.close(resolve))
  })
  const received: string[] = []
  const waiters: Array<() => void> = []
  client.on('message', (data) => { received.push(String(data)); for (const wake of waiters.splice(0)) wake() })
  await new Promise((resolve, reject) => { client.once('open', resolve); client.once('error', reject) })
  const server = await accepted
  const internals = server as unknown as WsInternals
  const pair: Pair = {
    server,
    internals,
    writes: [],
    senderSends: 0,
    nextMessages: async (count) => {
      while (received.length < count) await new Promise<void>((resolve) => waiters.push(resolve))
      return received.splice(0, count)
    }
  }
  const raw = internals._socket
  if (raw !== null) {
    const write = raw.write
    raw.write = function (this: Socket, chunk: Buffer | string, ...rest: unknown[]) {
      // ws writes a text message's payload as the string itself.
      pair.writes.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk)
      return (write as (...args: unknown[]) => boolean).call(this, chunk, ...rest)
    } as typeof raw.write
  }
  const sender = internals._sender as unknown as { send: (...args: unknown[]) => void } | null
  if (sender !== null) {
    const send = sender.send
    sender.send = function (this: unknown, ...args: unknown[]) {
      pair.senderSends++
      send.apply(this, args)
    }
  }
  return pair
}

t.test('the ws internals the fast path reads exist on the installed ws, with the values it expects of an idle socket', async (t) => {
  const { internals, server } = await connect(t, false)
  t.ok(internals._socket instanceof Socket, '_socket is the TCP socket')
  t.ok(internals._sender instanceof (Sender as unknown as new () => object), '_sender is ws\'s Sender')
  t.ok(Array.isArray(internals._sender?._queue), '_sender._queue is an array')
  t.equal(internals._sender?._queue.length, 0, 'and empty on an idle socket')
  t.equal(internals._sender?._state, 0, '_sender._state is 0 (DEFAULT) on an idle socket')
  t.same(Object.keys(internals._extensions), [], '_extensions holds no extension when none was negotiated')
  t.equal(internals._socket?.writableNeedDrain, false, 'writableNeedDrain is a boolean Node keeps on the socket')
  t.equal(backlogged(server), false, 'so an idle socket is not backlogged')
})

t.test('an idle socket takes the fast path: the shared bytes in one write, ws\'s sender untouched', async (t) => {
  const pair = await connect(t, false)
  const frame = new SharedFrame('{"type":"event","seq":1}')
  writeSharedFrame(pair.server, frame)
  t.equal(pair.writes.length, 1, 'one write to the TCP socket')
  t.equal(pair.writes[0], frame.bytes, 'of the shared buffer itself')
  t.equal(pair.senderSends, 0, 'ws did not frame it again')
  t.same(await pair.nextMessages(1), ['{"type":"event","seq":1}'], 'the client reads the message')

  // Several frames corked: still the shared buffers, read in order.
  pair.writes.length = 0
  corked(pair.server, () => { for (let i = 2; i <= 4; i++) writeSharedFrame(pair.server, new SharedFrame(`{"seq":${i}}`)) })
  t.equal(pair.writes.length, 3, 'one write per frame')
  t.same(await pair.nextMessages(3), ['{"seq":2}', '{"seq":3}', '{"seq":4}'])
})

t.test('ws\'s own send puts the same bytes on the wire as a shared frame', async (t) => {
  const pair = await connect(t, false)
  for (const text of ['', 'x'.repeat(125), 'x'.repeat(126), 'x'.repeat(65_536), 'é€😀'.repeat(100)]) {
    pair.writes.length = 0
    pair.server.send(text, { binary: false })
    t.ok(Buffer.concat(pair.writes).equals(new SharedFrame(text).bytes), `${Buffer.byteLength(text)} bytes`)
    t.same(await pair.nextMessages(1), [text])
  }
})

t.test('while ws is busy with a message of its own, a shared frame waits behind it in ws\'s queue', async (t) => {
  const pair = await connect(t, false)
  // A Blob is read asynchronously: ws's sender is busy until it is, and queues what follows.
  pair.server.send(new Blob(['first']))
  t.not(pair.internals._sender?._state, 0, 'ws marks its sender busy')
  const frame = new SharedFrame('second')
  writeSharedFrame(pair.server, frame)
  t.notOk(pair.writes.includes(frame.bytes), 'the shared bytes were not written ahead of ws\'s message')
  t.equal(pair.senderSends, 2, 'ws framed it after its own')
  t.same(await pair.nextMessages(2), ['first', 'second'], 'the client reads them in order')
  t.equal(pair.internals._sender?._state, 0, 'the sender is idle again')
  t.equal(pair.internals._sender?._queue.length, 0, 'with an empty queue')

  const after = new SharedFrame('third')
  writeSharedFrame(pair.server, after)
  t.ok(pair.writes.includes(after.bytes), 'and the fast path is back')
  t.same(await pair.nextMessages(1), ['third'])
})

t.test('with permessage-deflate negotiated, ws frames (and may compress) every message itself', async (t) => {
  const pair = await connect(t, true)
  t.ok('permessage-deflate' in pair.internals._extensions, 'the extension is where the fast path looks for it')
  pair.server.send('first '.repeat(1000))
  const frame = new SharedFrame('second')
  writeSharedFrame(pair.server, frame)
  t.notOk(pair.writes.includes(frame.bytes), 'the uncompressed shared bytes were never written')
  t.equal(pair.senderSends, 2, 'ws sent both')
  t.same(await pair.nextMessages(2), ['first '.repeat(1000), 'second'], 'in order')
})
