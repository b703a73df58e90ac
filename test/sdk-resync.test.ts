import t from 'tap'
import { AtlasClient, type Snapshot, type TaskEvent } from '../client/index.js'
import { api, startInstance, tokenFor } from './helpers/app.js'
import { controlledWebSocket, nextEvent, until } from './helpers/sdk.js'

t.test('a resume the log can no longer serve makes the client refetch the list and go on after it', async (t) => {
  const dir = t.testdir()
  // Keeps two events per team, pruned only when the test says so.
  const instance = await startInstance(t, {
    databasePath: `${dir}/atlas.db`,
    realtime: { hub: { retention: { maxEventsPerTeam: 2, pruneIntervalMs: 0 } } }
  })
  const [alice, bob] = await Promise.all([tokenFor('alice', ['red']), tokenFor('bob', ['red'])])
  const create = async (title: string): Promise<void> => {
    const response = await api(instance.baseUrl, 'POST', '/teams/red/tasks', { token: bob, body: { title } })
    if (response.status !== 201) throw new Error(`create answered ${response.status}`)
  }

  const control = controlledWebSocket()
  // The list fetch of the resync, stretched so that events arrive while it is in flight:
  // seq 6 is committed before the list is read (the list includes it), seq 7 after (it does not).
  let resyncing = false
  const listCalls: string[] = []
  const fetchSpy: typeof fetch = async (input, init) => {
    const url = String(input)
    if ((init?.method ?? 'GET') === 'GET' && url.endsWith('/teams/red/tasks')) listCalls.push(url)
    if (!resyncing || (init?.method ?? 'GET') !== 'GET') return await fetch(input, init)
    resyncing = false
    await create('during the refetch, before the list')
    await control.arrived('seq 6', (f) => f.seq === 6 && f.type === 'task.created')
    const response = await fetch(input, init)
    await create('during the refetch, after the list')
    await control.arrived('seq 7', (f) => f.seq === 7 && f.type === 'task.created')
    return response
  }

  const client = new AtlasClient({
    baseUrl: instance.baseUrl,
    token: alice,
    teams: ['red'],
    WebSocket: control.WebSocket,
    fetch: fetchSpy,
    reconnect: { baseMs: 20, capMs: 100 }
  })
  t.teardown(() => client.close())
  const events: TaskEvent[] = []
  const snapshots: Snapshot[] = []
  const order: string[] = []
  client.on('event', (e) => { events.push(e); order.push(`event ${e.seq}`) })
  client.on('snapshot', (s) => { snapshots.push(s); order.push(`snapshot ${s.seq}`) })
  client.connect()
  await nextEvent(client, 'snapshot')
  await create('seen live')
  await until('event 1', client, ['event'], () => events.length === 1)

  // Away while four more events are committed and all but the last two are pruned.
  control.blocked = true
  const dropped = nextEvent(client, 'disconnect')
  for (const ws of instance.app.websocketServer.clients) ws.terminate()
  await dropped
  for (const title of ['a', 'b', 'c', 'd']) await create(title)
  await instance.app.atlasRetention.prune()

  resyncing = true
  const resync = nextEvent<{ reason: string }>(client, 'resyncing', (r) => r.reason !== 'initial')
  control.blocked = false
  t.equal((await resync).reason, 'history_pruned', 'the server said the history was pruned')
  await until('event 7', client, ['event'], () => events.some((e) => e.seq === 7))

  t.ok(control.received.some((f) => f.type === 'resync' && f.teamId === 'red'), 'a resync frame came')
  t.equal(new URL(control.urls.at(-1) ?? '').searchParams.get('since'), 'red:1', 'it asked to resume from seq 1')
  t.equal(listCalls.length, 2, 'the list was fetched again (once at start, once for the resync)')
  const last = snapshots.at(-1)
  t.equal(last?.reason, 'history_pruned')
  t.equal(last?.seq, 6, 'the list is current as of seq 6')
  t.same(last?.tasks.map((task) => task.title), ['seen live', 'a', 'b', 'c', 'd', 'during the refetch, before the list'])
  t.ok(control.received.some((f) => f.seq === 6 && f.type === 'task.created'), 'seq 6 did arrive on the socket')
  t.same(events.map((e) => e.seq), [1, 7], 'only events after the list are applied: 6 is in the list, 2..5 were pruned')
  t.same(order, ['snapshot 0', 'event 1', 'snapshot 6', 'event 7'], 'event 7, which arrived during the fetch, waited for the list')
  t.equal(client.lastSeq('red'), 7)

  const server = await api(instance.baseUrl, 'GET', '/teams/red/tasks', { token: alice })
  t.equal(server.body.seq, 7)
})
