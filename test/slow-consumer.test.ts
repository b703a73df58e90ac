/**
 * A client that stops reading while 10,000 events flow: the server cuts it off (close 4008, then
 * destroys the socket when it does not even take the close frame), its unsent backlog never
 * passes the limit, and the clients that do read get every event in order.
 */
import t from 'tap'
import type { Socket } from 'node:net'
import { connectClient, seqRange, startInstance, tokenFor, waitUntil } from './helpers/app.js'
import { neverReadingClient, seqsOf } from './helpers/ws-client.js'

const EVENTS = 10_000
const BATCH = 100
const MAX_BUFFERED = 256 * 1024

t.test('a client that never reads is cut off; the backlog stays bounded; readers get all 10,000 events in order', async (t) => {
  const databasePath = `${t.testdir()}/atlas.db`
  const instance = await startInstance(t, {
    databasePath,
    realtime: { websocket: { maxBufferedBytes: MAX_BUFFERED, closeGraceMs: 4000 } }
  })
  const { app } = instance
  const alice = await tokenFor('alice', ['red'])
  const readers = [await connectClient(t, instance, alice), await connectClient(t, instance, alice)]
  // One stalls for a while and reads again later (it then sees why it was cut); one never reads.
  const stalling = await connectClient(t, instance, alice)
  const stallingSocket = (stalling.socket as unknown as { _socket: Socket })._socket
  stallingSocket.pause()
  const query = new URLSearchParams({ access_token: alice }).toString()
  await neverReadingClient(t, `${instance.wsUrl}?${query}`)
  await waitUntil('4 subscriptions', () => app.atlasHub.stats.subscriptions === 4)
  t.equal(app.atlasConnections.connectionCount, 4)

  const serverSockets = [...app.websocketServer.clients]
  let maxBuffered = 0
  let largestFrame = 0
  const sample = (): void => {
    for (const socket of serverSockets) maxBuffered = Math.max(maxBuffered, socket.bufferedAmount)
  }
  const before = process.memoryUsage()
  const peak = { ...before }
  const description = 'x'.repeat(1000)
  let resumedAt: number | undefined
  const received: number[][] = readers.map(() => [])
  for (let sent = 0; sent < EVENTS;) {
    for (let i = 0; i < BATCH; i++, sent++) {
      const { event } = await app.taskRepository.create('red', { title: `event ${sent}`, description }, { actor: 'writer' })
      largestFrame = Math.max(largestFrame, Buffer.byteLength(JSON.stringify(event)))
    }
    sample()
    // Paced by the readers (a real producer is paced by its own clients), never by the stalled ones.
    await Promise.all(readers.map(async (reader, r) => {
      await reader.waitFor(`${sent} events`, () => received[r].length + reader.events.length >= sent, 30_000)
      // Keep only the seqs, so the memory figure is the server's, not the test clients' records.
      received[r].push(...seqsOf(reader.events, 'red'))
      reader.events.length = 0
      reader.frames.length = 0
    }))
    sample()
    const now = process.memoryUsage()
    for (const key of ['rss', 'heapUsed', 'external', 'arrayBuffers'] as const) peak[key] = Math.max(peak[key], now[key])
    // Once both stalled sockets were cut (they left their team), the stalling one reads again.
    if (resumedAt === undefined && app.atlasHub.stats.subscriptions === 2) {
      resumedAt = sent
      stallingSocket.resume()
    }
  }

  t.ok(resumedAt !== undefined, `both stalled sockets were cut off during the flood (seen after ${resumedAt} events)`)
  stallingSocket.resume()
  const outcome = await Promise.race([
    stalling.closed.then(({ code }) => code),
    new Promise<string>((resolve) => { setTimeout(() => { resolve('still open 15 s after the flood') }, 15_000).unref() })
  ])
  t.equal(outcome, 4008, 'the stalling client, once it read again, got close code 4008')
  t.ok(stalling.events.length < EVENTS, `it got only a prefix (${stalling.events.length} events)`)
  t.same(seqsOf(stalling.events, 'red'), seqRange(1, stalling.events.length), 'that prefix was in order, with no hole')
  // The one that never reads does not even take the close frame: it is destroyed after closeGraceMs.
  await waitUntil('the never-reading socket to be destroyed', () => app.atlasConnections.connectionCount === 2, 15_000)
    .catch((err: Error) => { t.fail(err.message) })
  t.equal(app.atlasConnections.connectionCount, 2, 'only the readers are still connected')
  t.equal(app.atlasHub.stats.subscriptions, 2)

  t.ok(maxBuffered <= MAX_BUFFERED + largestFrame + 512,
    `a socket's unsent backlog never passed the limit plus one frame (max ${maxBuffered} bytes, limit ${MAX_BUFFERED})`)
  for (const [i, seqs] of received.entries()) {
    t.same(seqs, seqRange(1, EVENTS), `reader ${i + 1}: all ${EVENTS} events, in order`)
  }
  const mb = (n: number): string => `${(n / 1024 / 1024).toFixed(1)} MiB`
  t.comment(`${EVENTS} events of ~${largestFrame} bytes (${mb(EVENTS * largestFrame)} per reader); stalled sockets cut after ${resumedAt} events`)
  const figure = (key: 'rss' | 'heapUsed' | 'external' | 'arrayBuffers'): string => `${key} ${mb(before[key])} -> peak ${mb(peak[key])} (+${mb(peak[key] - before[key])})`
  t.comment(`test process (server and its clients) memory during the flood: ${(['rss', 'heapUsed', 'external', 'arrayBuffers'] as const).map(figure).join(', ')}`)
  t.comment(`largest unsent backlog of any server socket: ${maxBuffered} bytes (limit ${MAX_BUFFERED})`)
})
