import t, { type Test } from 'tap'
import { AtlasClient, CloseCode, type TaskEvent } from '../client/index.js'
import { api, startInstance, tokenFor, type Instance } from './helpers/app.js'
import { controlledWebSocket, nextEvent, until, type SocketControl } from './helpers/sdk.js'
import { eachBackend, testDatabase, type Backend } from './helpers/backends.js'

interface Setup {
  instance: Instance
  client: AtlasClient
  control: SocketControl
  events: TaskEvent[]
  bob: string
  /** One mutation over HTTP as bob; resolves to the task. */
  createTask (title: string): Promise<{ id: string }>
}

async function setup (t: Test, heartbeat?: { intervalMs: number, timeoutMs: number }, backend: Backend = 'sqlite'): Promise<Setup> {
  const instance = await startInstance(t, await testDatabase(t, backend))
  const [alice, bob] = await Promise.all([tokenFor('alice', ['red']), tokenFor('bob', ['red'])])
  const control = controlledWebSocket()
  const client = new AtlasClient({
    baseUrl: instance.baseUrl,
    token: alice,
    teams: ['red'],
    WebSocket: control.WebSocket,
    reconnect: { baseMs: 20, capMs: 100 },
    heartbeat
  })
  t.teardown(() => client.close())
  const events: TaskEvent[] = []
  client.on('event', (e) => events.push(e))
  client.connect()
  await nextEvent(client, 'snapshot')
  const createTask = async (title: string): Promise<{ id: string }> => {
    const response = await api(instance.baseUrl, 'POST', '/teams/red/tasks', { token: bob, body: { title } })
    if (response.status !== 201) throw new Error(`create answered ${response.status}`)
    return response.body
  }
  return { instance, client, control, events, bob, createTask }
}

async function eventsThrough (s: Setup, seq: number): Promise<void> {
  await until(`events through seq ${seq}`, s.client, ['event'], () => s.events.some((e) => e.seq === seq))
}

eachBackend(t, 'a client cut off (1001, 4008, dropped TCP) resumes and gets what it missed exactly once', async (t, backend) => {
  const s = await setup(t, undefined, backend)
  const { instance, client, control, events, bob } = s
  await s.createTask('one')
  const two = await s.createTask('two')
  await eventsThrough(s, 2)

  const cuts: Array<[string, () => void, number]> = [
    ['server restart (1001)', () => { for (const ws of instance.app.websocketServer.clients) ws.close(CloseCode.GOING_AWAY, 'restart') }, CloseCode.GOING_AWAY],
    ['slow consumer (4008)', () => { for (const ws of instance.app.websocketServer.clients) ws.close(CloseCode.SLOW_CONSUMER, 'slow consumer') }, CloseCode.SLOW_CONSUMER],
    ['dropped connection', () => { for (const ws of instance.app.websocketServer.clients) ws.terminate() }, 1006]
  ]
  let head = 2
  for (const [name, cut, code] of cuts) {
    // Reconnects are refused until the mutations below are committed: the client is away for them.
    control.blocked = true
    const dropped = nextEvent<{ code: number }>(client, 'disconnect')
    cut()
    t.equal((await dropped).code, code, `${name}: the client saw close code ${code}`)
    const away = await s.createTask(`made during ${name}`)
    const patched = await api(instance.baseUrl, 'PATCH', `/teams/red/tasks/${two.id}`, { token: bob, body: { description: `after ${name}` } })
    t.equal(patched.status, 200)
    const removed = await api(instance.baseUrl, 'DELETE', `/teams/red/tasks/${away.id}`, { token: bob })
    t.equal(removed.status, 204)
    const resumedFrom = head
    head += 3
    const urlsBefore = control.urls.length
    control.blocked = false
    await eventsThrough(s, head)
    t.equal(client.state, 'open', `${name}: open again`)
    const resumeUrl = new URL(control.urls.at(-1) ?? '')
    t.ok(control.urls.length > urlsBefore, `${name}: reconnected`)
    t.equal(resumeUrl.searchParams.get('since'), `red:${resumedFrom}`, `${name}: resumed from the last seq it had`)
    t.same(events.slice(-3).map((e) => e.type), ['task.created', 'task.updated', 'task.deleted'], `${name}: the missed mutations, in order`)
  }
  t.same(events.map((e) => e.seq), Array.from({ length: head }, (_, i) => i + 1), 'every seq exactly once, in order')
  t.equal(client.lastSeq('red'), head)
})

t.test('frames delivered twice reach the application once', async (t) => {
  const s = await setup(t)
  await s.createTask('first')
  await eventsThrough(s, 1)
  s.control.duplicate = true
  await s.createTask('second')
  await s.createTask('third')
  // Both frames of the last event have reached the SDK once this one arrived at the socket.
  await s.control.arrived('seq 3', (f) => f.seq === 3)
  await eventsThrough(s, 3)
  t.same(s.events.map((e) => e.seq), [1, 2, 3], 'duplicates dropped (seq <= last seen)')
  t.equal(s.control.received.filter((f) => typeof f.seq === 'number' && f.type !== 'subscribed').length, 3,
    'each event frame arrived once on the wire and was handed over twice')
})

t.test('a dead link is found by the heartbeat; the client reconnects and resumes', async (t) => {
  const s = await setup(t, { intervalMs: 50, timeoutMs: 100 })
  await s.createTask('before')
  await eventsThrough(s, 1)
  // From now on the open socket hears nothing, pongs included, while the server still sees it
  // alive (ws answers its protocol pings below the SDK): only the app-level heartbeat can tell.
  s.control.deafen()
  const dropped = nextEvent<{ code: number, reason: string }>(s.client, 'disconnect')
  await s.createTask('while deaf')
  const info = await dropped
  t.equal(info.code, CloseCode.HEARTBEAT_TIMEOUT)
  t.match(info.reason, /heartbeat/)
  await eventsThrough(s, 2)
  t.equal(new URL(s.control.urls.at(-1) ?? '').searchParams.get('since'), 'red:1')
  t.same(s.events.map((e) => e.seq), [1, 2], 'the event the dead socket swallowed came with the resume, once')
  t.equal(s.client.state, 'open')
})

eachBackend(t, 'a hole in the stream is never papered over: the list is reloaded', async (t, backend) => {
  const s = await setup(t, undefined, backend)
  await s.createTask('one')
  await eventsThrough(s, 1)
  // Seq 2 is lost on the way; seq 3 arrives: the client must not apply 3 on top of 1.
  s.control.drop = (f) => f.seq === 2 && f.type === 'task.created'
  const snapshot = nextEvent<{ reason: string, seq: number, tasks: unknown[] }>(s.client, 'snapshot')
  await s.createTask('two (lost)')
  await s.createTask('three')
  const reloaded = await snapshot
  t.equal(reloaded.reason, 'gap')
  t.ok(reloaded.seq >= 3, 'the list covers the hole')
  t.equal(reloaded.tasks.length, 3)
  s.control.drop = undefined
  await s.createTask('four')
  await eventsThrough(s, 4)
  t.same(s.events.map((e) => e.seq), [1, 4], 'events the list already covers are not delivered again')
})
