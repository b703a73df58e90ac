import t, { type Test } from 'tap'
import Fastify from 'fastify'
import { join } from 'node:path'
import type { Task, TaskEvent } from '../protocol/schemas.js'
import { atlasRealtime } from '../plugins/index.js'
import { api, startInstance, tokenFor, type Instance } from './helpers/app.js'
import { eachBackend, openTestRepository, testDatabase, type Backend } from './helpers/backends.js'

interface Page { tasks: Task[], seq: number, nextCursor: string | null }

async function setup (t: Test, backend: Backend, routes: Record<string, unknown> = {}): Promise<{
  instance: Instance
  page: (query?: string) => Promise<{ status: number, body: any }>
  create: (title: string) => Promise<Task>
}> {
  const instance = await startInstance(t, { ...await testDatabase(t, backend), realtime: { routes } })
  const alice = await tokenFor('alice', ['red'])
  const page = async (query = ''): Promise<{ status: number, body: any }> => await api(instance.baseUrl, 'GET', `/teams/red/tasks${query}`, { token: alice })
  const create = async (title: string): Promise<Task> => (await api<Task>(instance.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title } })).body
  return { instance, page, create }
}

/** Every page of the list from the start, `limit` at a time. */
async function allPages (page: (query?: string) => Promise<{ status: number, body: Page }>, limit: number): Promise<Page[]> {
  const pages: Page[] = []
  let cursor: string | null = null
  do {
    const query: string = `?limit=${limit}${cursor === null ? '' : `&cursor=${cursor}`}`
    const response = await page(query)
    if (response.status !== 200) throw new Error(`GET ${query} answered ${response.status} ${JSON.stringify(response.body)}`)
    pages.push(response.body)
    cursor = response.body.nextCursor
  } while (cursor !== null)
  return pages
}

eachBackend(t, 'pages follow the list order, each current as of its seq, the last with nextCursor null', async (t, backend) => {
  const { page, create } = await setup(t, backend)
  const created: Task[] = []
  for (let i = 0; i < 10; i++) created.push(await create(`task ${i}`))
  const whole = await page()
  t.equal(whole.status, 200)
  t.same(whole.body, { tasks: created, seq: 10, nextCursor: null }, 'without limit, a list under the default page size is one page')

  const pages = await allPages(page, 3)
  t.same(pages.map((p) => p.tasks.length), [3, 3, 3, 1])
  t.same(pages.flatMap((p) => p.tasks), created, 'the pages together are the list, in order')
  t.same(pages.map((p) => p.seq), [10, 10, 10, 10])
  t.ok(pages.slice(0, -1).every((p) => typeof p.nextCursor === 'string' && /^[A-Za-z0-9_-]+$/.test(p.nextCursor)), 'cursors are opaque base64url')
  // A page that ends exactly at the last task says so: no empty page after it.
  const exact = await allPages(page, 5)
  t.same(exact.map((p) => p.tasks.length), [5, 5])
  t.equal(exact[1].nextCursor, null)
  const single = await page('?limit=1000')
  t.equal(single.body.tasks.length, 10)
})

eachBackend(t, 'inserts and deletes between pages: no task twice, none skipped, events after the first seq converge', async (t, backend) => {
  const { instance, page, create } = await setup(t, backend)
  const alice = await tokenFor('alice', ['red'])
  const created: Task[] = []
  for (let i = 0; i < 9; i++) created.push(await create(`task ${i}`))
  const first = (await page('?limit=3')).body as Page
  t.same(first.tasks, created.slice(0, 3))

  // Between pages: one task of the first page and one of the next are deleted, one is updated,
  // one is created.
  for (const gone of [created[1], created[4]]) t.equal((await api(instance.baseUrl, 'DELETE', `/teams/red/tasks/${gone.id}`, { token: alice })).status, 204)
  const renamed = (await api<Task>(instance.baseUrl, 'PATCH', `/teams/red/tasks/${created[5].id}`, { token: alice, body: { title: 'renamed' } })).body
  const late = await create('late')

  const rest: Page[] = []
  let cursor = first.nextCursor
  while (cursor !== null) {
    const next = (await page(`?limit=3&cursor=${cursor}`)).body as Page
    rest.push(next)
    cursor = next.nextCursor
  }
  const seen = [...first.tasks, ...rest.flatMap((p) => p.tasks)]
  t.same(seen.map((task) => task.title), ['task 0', 'task 1', 'task 2', 'task 3', 'renamed', 'task 6', 'task 7', 'task 8', 'late'],
    'each page continues after the last task of the one before, whatever changed in between')
  t.same(rest.map((p) => p.seq), rest.map(() => 13), 'later pages are current as of their own (later) seq')
  t.equal(new Set(seen.map((task) => task.id)).size, seen.length, 'no task twice')
  t.same(seen.find((task) => task.id === renamed.id), renamed)
  t.same(seen.at(-1), late)

  // The documented client procedure: the pages, then the events after the FIRST page's seq.
  const tasks = new Map(seen.map((task) => [task.id, task]))
  const events = (await instance.app.taskRepository.eventsAfter('red', first.seq, 1000)).map((e) => JSON.parse(e.payload) as TaskEvent)
  t.same(events.map((e) => e.seq), [10, 11, 12, 13])
  for (const event of events) {
    if (event.type === 'task.deleted') tasks.delete(event.taskId)
    else tasks.set(event.taskId, event.task)
  }
  const now = (await page()).body as Page
  t.same([...tasks.values()].sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id)), now.tasks, 'converged on the list as it is now')
})

eachBackend(t, 'tasks created in the same millisecond page by id, without loss', async (t, backend) => {
  const { repository } = await openTestRepository(t, await testDatabase(t, backend), { now: () => 1_800_000_000_000 })
  const ids: string[] = []
  for (let i = 0; i < 7; i++) ids.push((await repository.create('red', { title: `t${i}` }, { actor: 'alice' })).task.id)
  ids.sort()
  const seen: string[] = []
  let cursor: string | undefined
  for (;;) {
    const p = await repository.list('red', { limit: 2, cursor })
    seen.push(...p.tasks.map((task) => task.id))
    if (p.nextCursor === null) break
    cursor = p.nextCursor
  }
  t.same(seen, ids)
  t.equal((await repository.list('blue', { limit: 2 })).nextCursor, null, 'an empty team is one empty page')
})

eachBackend(t, 'a bad cursor is 400 INVALID_CURSOR; a bad limit is 400 INVALID_LIMIT; the default page size applies', async (t, backend) => {
  const { page, create } = await setup(t, backend, { pageSize: 4, maxPageSize: 6 })
  for (let i = 0; i < 7; i++) await create(`task ${i}`)
  const good = (await page('?limit=2')).body as Page
  const valid = good.nextCursor as string
  const b64 = (text: string): string => Buffer.from(text).toString('base64url')
  const badCursors = [
    'garbage!', '', 'x'.repeat(300), `${valid}=`, `${valid}A`, valid.slice(0, -2),
    b64('not json'), b64('{"createdAt":1,"id":"x"}'), b64('[1]'), b64('[1,"x",3]'), b64('["1","x"]'), b64('[-1,"x"]'),
    b64('[1.5,"x"]'), b64('[1,""]'), b64(`[1,"${'x'.repeat(65)}"]`), b64('[1, "x"]'), b64('[1e3,"x"]')
  ]
  for (const cursor of badCursors) {
    const response = await page(`?cursor=${encodeURIComponent(cursor)}`)
    t.equal(response.status, 400, `cursor ${cursor.slice(0, 40)}`)
    t.equal(response.body.code, 'INVALID_CURSOR')
  }
  for (const limit of ['0', '-1', '1.5', 'abc', '', '7', '01', '1e2', '99999999999999999999']) {
    const response = await page(`?limit=${encodeURIComponent(limit)}`)
    t.equal(response.status, 400, `limit ${limit}`)
    t.equal(response.body.code, 'INVALID_LIMIT')
    t.equal(response.body.message, 'limit must be an integer from 1 to 6')
  }
  t.equal((await page('?limit=1&limit=2')).status, 400, 'a repeated parameter is refused')
  t.equal((await page('?limit=6')).body.tasks.length, 6, 'the maximum itself is accepted')
  const byDefault = (await page()).body as Page
  t.equal(byDefault.tasks.length, 4, 'without limit, pageSize tasks')
  t.type(byDefault.nextCursor, 'string')
  t.equal((await page(`?cursor=${byDefault.nextCursor as string}`)).body.tasks.length, 3)
})

eachBackend(t, 'the default page is 500 tasks', async (t, backend) => {
  const { instance, page } = await setup(t, backend)
  for (let i = 0; i < 501; i++) await instance.app.taskRepository.create('red', { title: `t${i}` }, { actor: 'alice' })
  const first = (await page()).body as Page
  t.equal(first.tasks.length, 500)
  t.equal((await page(`?cursor=${first.nextCursor as string}`)).body.tasks.length, 1)
  t.equal((await page('?limit=1001')).body.code, 'INVALID_LIMIT', 'the default maximum is 1000')
})

// Options refused before any database is used: one backend is enough.
t.test('page options are checked at registration', async (t) => {
  for (const [routes, message] of [
    [{ pageSize: 0 }, /option pageSize must be a positive integer/],
    [{ maxPageSize: 1.5 }, /option maxPageSize must be a positive integer/],
    [{ pageSize: 20, maxPageSize: 10 }, /option pageSize \(20\) must not exceed maxPageSize \(10\)/]
  ] as const) {
    const app = Fastify()
    t.teardown(async () => { await app.close() })
    await t.rejects(async () => {
      await app.register(atlasRealtime, { authenticate: () => null, database: { databasePath: join(t.testdir(), 'other.db') }, routes })
    }, { message }, JSON.stringify(routes))
  }
})
