import WebSocket from 'ws'
import { io, type Socket } from 'socket.io-client'
import { ClientState, type DeliveryTracker } from './tracker.js'

/** One benchmark client: connects, reports every task event to the tracker, disconnects. */
export interface BenchClient {
  readonly state: ClientState
  /** Resolves once the server confirmed the team subscription; `resume` asks for what was missed. */
  connect (resume: boolean): Promise<void>
  /** Closes the connection; resolves when it is closed. */
  close (): Promise<void>
  /** Whether the server said it restored the session (Socket.IO connection-state recovery). */
  readonly recovered: boolean
}

export interface ClientTarget {
  port: number
  teamId: string
  token: string
  state: ClientState
  tracker: DeliveryTracker
}

const CONNECT_TIMEOUT_MS = 30_000
const SEQ = Buffer.from('"seq":')
const TITLE = Buffer.from('"title":"m')
const AT = Buffer.from('"at":"')

/**
 * Atlas over plain `ws`. Event frames are recognised and read straight from the bytes (the
 * seq and the title's mutation index), without decoding or parsing the JSON: at hundreds of
 * thousands of deliveries a run, the load generator must stay cheap.
 */
export class AtlasBenchClient implements BenchClient {
  readonly state: ClientState
  readonly recovered = false
  readonly #target: ClientTarget
  #socket: WebSocket | undefined

  constructor (target: ClientTarget) {
    this.#target = target
    this.state = target.state
  }

  async connect (resume: boolean): Promise<void> {
    const { port, teamId, token, state, tracker } = this.#target
    let url = `ws://127.0.0.1:${port}/realtime?access_token=${token}&teams=${teamId}`
    if (resume) url += `&since=${teamId}:${state.lastKey}`
    const socket = new WebSocket(url, { perMessageDeflate: false })
    this.#socket = socket
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { fail(new Error('connect timeout')) }, CONNECT_TIMEOUT_MS)
      const fail = (err: Error): void => { clearTimeout(timer); socket.terminate(); reject(err) }
      socket.on('message', (data: Buffer) => {
        // `{"type":"task.` : bytes 9..13 are `task.`
        if (data[13] === 0x2e && data[9] === 0x74 && data[12] === 0x6b) {
          tracker.delivered(state, readNumberAfter(data, TITLE), readNumberAfter(data, SEQ), readTimeAfter(data, AT))
          return
        }
        const type = controlType(data)
        if (type === 'subscribed') { clearTimeout(timer); resolve() } else if (type === 'resync') tracker.resyncs++
      })
      socket.once('unexpected-response', (_req, res) => { fail(new Error(`upgrade refused: ${res.statusCode}`)) })
      socket.once('error', fail)
      socket.once('close', () => { fail(new Error('closed before subscribed')) })
    })
    socket.on('error', () => {})
  }

  async close (): Promise<void> {
    const socket = this.#socket
    if (socket === undefined || socket.readyState === WebSocket.CLOSED) return
    await new Promise<void>((resolve) => {
      socket.once('close', () => { resolve() })
      socket.close(1000)
    })
  }
}

/** The `type` of a control frame; undefined for anything unreadable (counted by nobody, harmless). */
function controlType (data: Buffer): string | undefined {
  try {
    return (JSON.parse(data.toString()) as { type?: string }).type
  } catch {
    return undefined
  }
}

/** Reads the unsigned integer right after `marker` in `data`; -1 when absent. */
function readNumberAfter (data: Buffer, marker: Buffer): number {
  let i = data.indexOf(marker)
  if (i < 0) return -1
  i += marker.length
  let n = 0
  let digits = 0
  for (let c = data[i]; c >= 0x30 && c <= 0x39; c = data[++i]) { n = n * 10 + (c - 0x30); digits++ }
  return digits === 0 ? -1 : n
}

/**
 * The ISO 8601 time right after `marker` (the event's `at`: Date.now() when the mutation's
 * transaction began, whole milliseconds), as ms since the epoch; NaN when absent.
 */
function readTimeAfter (data: Buffer, marker: Buffer): number {
  const i = data.indexOf(marker)
  if (i < 0) return NaN
  const from = i + marker.length
  return Date.parse(data.toString('latin1', from, from + 24))
}

interface PeerEvent { seq: number, task: { title: string } }

/** The peer's clients: socket.io-client over its WebSocket transport, as a Socket.IO deployment would use. */
export class SocketIoBenchClient implements BenchClient {
  readonly state: ClientState
  recovered = false
  readonly #target: ClientTarget
  #socket: Socket | undefined

  constructor (target: ClientTarget) {
    this.#target = target
    this.state = target.state
  }

  async connect (_resume: boolean): Promise<void> {
    const { port, teamId, token, state, tracker } = this.#target
    // The same Socket object reconnects, so the client offers its session for recovery.
    let socket = this.#socket
    if (socket === undefined) {
      socket = io(`http://127.0.0.1:${port}`, {
        transports: ['websocket'],
        reconnection: false,
        forceNew: true,
        timeout: CONNECT_TIMEOUT_MS,
        auth: { token },
        query: { teams: teamId }
      })
      socket.on('task', (event: PeerEvent) => {
        tracker.delivered(state, Number(event.task.title.slice(1)), event.seq)
      })
      this.#socket = socket
    } else {
      socket.connect()
    }
    const s = socket
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error): void => {
        s.off('subscribed', onSubscribed)
        s.off('connect_error', done)
        if (err === undefined) resolve(); else reject(err)
      }
      const onSubscribed = (info: { recovered: boolean }): void => {
        this.recovered = info.recovered
        done()
      }
      s.on('subscribed', onSubscribed)
      s.on('connect_error', done)
    })
  }

  async close (): Promise<void> {
    const socket = this.#socket
    if (socket === undefined || !socket.connected) return
    await new Promise<void>((resolve) => {
      socket.io.once('close', () => { resolve() })
      socket.disconnect()
    })
  }
}
