import t from 'tap'
import { AtlasClient, TaskStore, type Task } from '../client/index.js'
import { api, startInstance, tokenFor } from './helpers/app.js'
import { until } from './helpers/sdk.js'

const byKey = (a: Task, b: Task): number => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id)

t.test('the SDK store loads a team of several pages, and converges when it changes between pages', async (t) => {
  const instance = await startInstance(t, { databasePath: `${t.testdir()}/atlas.db`, realtime: { routes: { pageSize: 3, maxPageSize: 3 } } })
  const alice = await tokenFor('alice', ['red'])
  const bob = await tokenFor('bob', ['red'])
  const created: Task[] = []
  for (let i = 0; i < 10; i++) created.push((await api<Task>(instance.baseUrl, 'POST', '/teams/red/tasks', { token: bob, body: { title: `task ${i}` } })).body)

  // After the first page has been read, others change the team: a task of the first page is
  // renamed, one of a later page deleted, one created. The SDK's later pages see these; the
  // events after the first page's seq bring everything to one state.
  const lists: string[] = []
  let interfere = true
  const fetchSpy: typeof fetch = async (input, init) => {
    const url = String(input)
    const response = await fetch(input, init)
    if ((init?.method ?? 'GET') === 'GET' && url.includes('/teams/red/tasks')) {
      lists.push(url.slice(url.indexOf('/teams/')))
      if (interfere) {
        interfere = false
        await api(instance.baseUrl, 'PATCH', `/teams/red/tasks/${created[1].id}`, { token: bob, body: { title: 'renamed' } })
        await api(instance.baseUrl, 'DELETE', `/teams/red/tasks/${created[6].id}`, { token: bob })
        await api(instance.baseUrl, 'POST', '/teams/red/tasks', { token: bob, body: { title: 'late' } })
      }
    }
    return response
  }
  const client = new AtlasClient({ baseUrl: instance.baseUrl, token: alice, fetch: fetchSpy })
  t.teardown(() => client.close())
  const store = new TaskStore(client, 'red')
  t.teardown(() => store.close())
  const snapshots: number[] = []
  store.on('snapshot', (snapshot) => snapshots.push(snapshot.seq))
  client.connect()
  await store.start()

  t.same(snapshots, [10], 'the snapshot is as of the FIRST page\'s seq')
  t.equal(lists.length, 4, `four pages of at most 3 (${lists.join(' ')})`)
  t.match(lists[1], /\?cursor=[A-Za-z0-9_-]+$/)
  await until('the store to apply the changes made between pages', store, ['change'], () => store.seq === 13)
  const server = (await api(instance.baseUrl, 'GET', '/teams/red/tasks?limit=3', { token: alice })).body
  const all: Task[] = [...server.tasks]
  let cursor = server.nextCursor as string | null
  while (cursor !== null) {
    const page = (await api(instance.baseUrl, 'GET', `/teams/red/tasks?limit=3&cursor=${cursor}`, { token: alice })).body
    all.push(...page.tasks)
    cursor = page.nextCursor
  }
  t.equal(all.length, 10)
  t.same(store.tasks, all.sort(byKey), 'the store equals the server\'s list')
  t.same((await client.api.list('red')).tasks, all, 'TaskApi.list follows every page')
})

t.test('teams named constructor, __proto__ and toString work through the SDK store, across a reconnect', async (t) => {
  const instance = await startInstance(t, { databasePath: `${t.testdir()}/atlas.db` })
  const teams = ['constructor', '__proto__', 'toString']
  const token = await tokenFor('alice', teams)
  const create = async (team: string, title: string): Promise<Task> => {
    const response = await api<Task>(instance.baseUrl, 'POST', `/teams/${team}/tasks`, { token, body: { title } })
    if (response.status !== 201) throw new Error(`POST to ${team} answered ${response.status}`)
    return response.body
  }
  for (const team of teams) await create(team, `${team} before`)
  const client = new AtlasClient({ baseUrl: instance.baseUrl, token, teams })
  t.teardown(() => client.close())
  const stores = teams.map((team) => new TaskStore(client, team))
  t.teardown(() => { for (const store of stores) store.close() })
  client.connect()
  await Promise.all(stores.map(async (store) => { await store.start() }))
  stores.forEach((store, i) => {
    t.same(store.tasks.map((task) => task.title), [`${teams[i]} before`], `${teams[i]} loaded`)
    t.equal(store.seq, 1)
  })

  for (const team of teams) await create(team, `${team} live`)
  await Promise.all(stores.map(async (store) => { await until(`${store.teamId} live`, store, ['change'], () => store.seq === 2) }))

  // Cut from the server side; changes while away arrive by resume (since=<team>:2).
  const reconnected = new Promise<void>((resolve) => { const off = client.on('reconnect', () => { off(); resolve() }) })
  for (const socket of instance.app.websocketServer.clients) socket.terminate()
  for (const team of teams) await create(team, `${team} while away`)
  await reconnected
  await Promise.all(stores.map(async (store) => { await until(`${store.teamId} resumed`, store, ['change'], () => store.seq === 3) }))
  for (const [i, store] of stores.entries()) {
    const server = (await api(instance.baseUrl, 'GET', `/teams/${teams[i]}/tasks`, { token })).body
    t.same(store.tasks, server.tasks, `${teams[i]}: the store equals the server`)
    t.same(store.tasks.map((task) => task.title), [`${teams[i]} before`, `${teams[i]} live`, `${teams[i]} while away`])
  }
  t.same(client.teams.sort(), [...teams].sort())
  t.notOk(Object.prototype.hasOwnProperty.call(Object.prototype, 'seq'), 'nothing leaked onto Object.prototype')
})
