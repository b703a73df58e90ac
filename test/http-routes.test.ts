import t, { type Test } from 'tap'
import { signToken } from '../examples/jwt-auth.js'
import type { Task } from '../protocol/schemas.js'
import { api, startInstance, tokenFor, type ApiResponse } from './helpers/app.js'
import { eachBackend, testDatabase, type Backend } from './helpers/backends.js'

const UNKNOWN_ID = '00000000-0000-4000-8000-000000000000'

interface CallOptions { token?: string, body?: unknown, headers?: Record<string, string> }

/** An instance of the example API with one red task made by alice (red only). */
async function setup (t: Test, backend: Backend) {
  const instance = await startInstance(t, await testDatabase(t, backend))
  const alice = await tokenFor('alice', ['red'])
  const call = async (method: string, path: string, options: CallOptions = {}): Promise<ApiResponse> =>
    await api(instance.baseUrl, method, path, { token: alice, ...options })
  const created = await call('POST', '/teams/red/tasks', { body: { title: 'first' } })
  t.equal(created.status, 201)
  const task = created.body as Task
  const repository = instance.app.taskRepository
  /** Tasks, list seq and event log of both teams: what a refused request must leave as it was. */
  const stored = async (): Promise<unknown> => await Promise.all(['red', 'blue'].map(async (team) => ({ list: await repository.list(team), log: await repository.eventsAfter(team, 0, 10_000) })))
  return { instance, alice, call, task, taskPath: `/teams/red/tasks/${task.id}`, repository, stored }
}

eachBackend(t, '401 without a token, with a garbage one or one signed by another secret, on every route', async (t, backend) => {
  const { call, taskPath, stored } = await setup(t, backend)
  const before = await stored()
  const foreign = await signToken('some-other-secret', 'alice', ['red'])
  const routes: Array<[string, string, unknown?]> = [
    ['GET', '/teams/red/tasks'],
    ['POST', '/teams/red/tasks', { title: 'x' }],
    ['GET', taskPath],
    ['PATCH', taskPath, { title: 'x' }],
    ['DELETE', taskPath]
  ]
  for (const [method, path, body] of routes) {
    for (const [label, headers] of [['no token', {}], ['garbage token', { authorization: 'Bearer garbage' }], ['foreign secret', { authorization: `Bearer ${foreign}` }]] as const) {
      const response = await call(method, path, { token: undefined, body, headers })
      t.equal(response.status, 401, `${method} ${path} with ${label}`)
      t.equal(response.body.code, 'UNAUTHORIZED')
      t.equal(response.headers.get('www-authenticate'), 'Bearer')
    }
  }
  t.same(await stored(), before)
})

eachBackend(t, "403 for a team outside the principal, checked before the body is validated", async (t, backend) => {
  const { call, task, stored } = await setup(t, backend)
  const before = await stored()
  const cases: Array<[string, string, unknown?]> = [
    ['GET', '/teams/blue/tasks'],
    ['POST', '/teams/blue/tasks', { title: 'x' }],
    ['POST', '/teams/blue/tasks', { bogus: 1, title: 5 }],
    ['POST', '/teams/blue/tasks', '{not json'],
    ['GET', `/teams/blue/tasks/${task.id}`],
    ['PATCH', `/teams/blue/tasks/${task.id}`, {}],
    ['DELETE', `/teams/blue/tasks/${task.id}`]
  ]
  for (const [method, path, body] of cases) {
    const response = await call(method, path, { body })
    t.equal(response.status, 403, `${method} ${path} ${JSON.stringify(body) ?? ''}`)
    t.equal(response.body.code, 'FORBIDDEN_TEAM')
  }
  t.same(await stored(), before)
})

eachBackend(t, '404 for an unknown task, and for a task asked for under another team', async (t, backend) => {
  const { call, instance, task, stored } = await setup(t, backend)
  const before = await stored()
  for (const method of ['GET', 'PATCH', 'DELETE']) {
    const response = await call(method, `/teams/red/tasks/${UNKNOWN_ID}`, { body: method === 'PATCH' ? { title: 'x' } : undefined })
    t.equal(response.status, 404, method)
    t.match(response.body, { code: 'TASK_NOT_FOUND', message: `Task ${UNKNOWN_ID} not found` })
  }
  const dave = await tokenFor('dave', ['red', 'blue'])
  const crossTeam = await api(instance.baseUrl, 'PATCH', `/teams/blue/tasks/${task.id}`, { token: dave, body: { title: 'x' } })
  t.equal(crossTeam.status, 404, 'a red task is not reachable through /teams/blue')
  t.same(await stored(), before)
})

eachBackend(t, 'GET, POST and PATCH answer with the task version as ETag', async (t, backend) => {
  const { call, taskPath } = await setup(t, backend)
  const created = await call('POST', '/teams/red/tasks', { body: { title: 'second' } })
  t.equal(created.headers.get('etag'), '"1"')
  t.equal(created.headers.get('location'), `/teams/red/tasks/${created.body.id as string}`)
  const patched = await call('PATCH', taskPath, { body: { status: 'done' } })
  t.equal(patched.status, 200)
  t.equal(patched.headers.get('etag'), '"2"')
  t.equal(patched.body.version, 2)
  const fetched = await call('GET', taskPath)
  t.equal(fetched.headers.get('etag'), '"2"')
  t.same(fetched.body, patched.body)
})

eachBackend(t, 'a stale If-Match gets 412 with the current task, and changes nothing', async (t, backend) => {
  const { call, taskPath, stored } = await setup(t, backend)
  const current = (await call('PATCH', taskPath, { body: { title: 'second version' } })).body as Task
  const before = await stored()
  for (const [method, body] of [['PATCH', { title: 'lost update' }], ['DELETE', undefined]] as const) {
    const response = await call(method, taskPath, { body, headers: { 'if-match': '"1"' } })
    t.equal(response.status, 412, method)
    t.equal(response.body.code, 'PRECONDITION_FAILED')
    t.same(response.body.task, current, 'the body carries the current task to rebase on')
    t.equal(response.headers.get('etag'), '"2"')
  }
  t.same(await stored(), before)
})

eachBackend(t, 'If-Match with the current version succeeds', async (t, backend) => {
  const { call, taskPath, repository } = await setup(t, backend)
  const patched = await call('PATCH', taskPath, { body: { title: 'renamed' }, headers: { 'if-match': '"1"' } })
  t.equal(patched.status, 200)
  t.equal(patched.body.title, 'renamed')
  const deleted = await call('DELETE', taskPath, { headers: { 'if-match': patched.headers.get('etag') ?? '' } })
  t.equal(deleted.status, 204)
  t.same(await repository.list('red'), { tasks: [], seq: 3, nextCursor: null })
})

eachBackend(t, 'invalid requests get a clear error and leave tasks and event log unchanged', async (t, backend) => {
  const { call, taskPath, stored } = await setup(t, backend)
  const cases: Array<{ name: string, method?: string, body: unknown, headers?: Record<string, string>, status?: number, message: RegExp }> = [
    { name: 'unknown field', body: { title: 'x', color: 'red' }, message: /^body\/color Unexpected property$/ },
    { name: 'title: 5 (no coercion)', body: { title: 5 }, message: /^body\/title Expected string$/ },
    { name: 'missing title', body: { status: 'todo' }, message: /title/ },
    { name: 'empty title', body: { title: '' }, message: /^body\/title Expected string length greater or equal to 1$/ },
    { name: 'title over 200 chars', body: { title: 'x'.repeat(201) }, message: /^body\/title Expected string length less or equal to 200$/ },
    { name: 'bad status', body: { title: 'x', status: 'archived' }, message: /^body\/status Expected 'todo' or 'in_progress' or 'done'$/ },
    { name: 'bad dueDate format', body: { title: 'x', dueDate: '2026/01/01' }, message: /^body\/dueDate Expected string to match .* or null$/ },
    { name: 'impossible dueDate', body: { title: 'x', dueDate: '2026-02-30' }, message: /^dueDate 2026-02-30 is not a calendar date$/ },
    { name: 'non-JSON body', body: '{"title":', message: /not valid JSON/ },
    { name: 'wrong content-type', body: '{"title":"x"}', headers: { 'content-type': 'text/plain' }, status: 415, message: /Content-Type must be application\/json/ },
    { name: 'form content-type', body: 'title=x', headers: { 'content-type': 'application/x-www-form-urlencoded' }, status: 415, message: /Content-Type must be application\/json/ },
    { name: 'body over the limit', body: { title: 'x', description: 'y'.repeat(70_000) }, status: 413, message: /too large/ },
    { name: 'PATCH: empty patch', method: 'PATCH', body: {}, message: /^body Expected object to have at least 1 properties$/ },
    { name: 'PATCH: unknown field', method: 'PATCH', body: { priority: 1 }, message: /^body\/priority Unexpected property$/ },
    { name: 'PATCH: title: 5', method: 'PATCH', body: { title: 5 }, message: /^body\/title Expected string$/ },
    { name: 'PATCH: impossible dueDate', method: 'PATCH', body: { dueDate: '2026-02-30' }, message: /^dueDate 2026-02-30 is not a calendar date$/ },
    { name: 'PATCH: wrong content-type', method: 'PATCH', body: '{"title":"x"}', headers: { 'content-type': 'text/plain' }, status: 415, message: /application\/json/ }
  ]
  for (const { name, method = 'POST', body, headers, status = 400, message } of cases) {
    const before = await stored()
    const response = await call(method, method === 'POST' ? '/teams/red/tasks' : taskPath, { body, headers })
    t.equal(response.status, status, `${name}: status`)
    t.match(response.body?.message, message, `${name}: message`)
    t.same(await stored(), before, `${name}: nothing stored`)
  }
})

eachBackend(t, 'two concurrent PATCHes of different fields both survive', async (t, backend) => {
  const { call, taskPath, repository } = await setup(t, backend)
  const [a, b] = await Promise.all([
    call('PATCH', taskPath, { body: { title: 'renamed' } }),
    call('PATCH', taskPath, { body: { status: 'done' } })
  ])
  t.same([a.status, b.status], [200, 200])
  const final = await call('GET', taskPath)
  t.match(final.body, { title: 'renamed', status: 'done', version: 3 })
  const changes = (await repository.eventsAfter('red', 1, 100)).map((e) => JSON.parse(e.payload).changes)
  t.same(changes.sort(), [['status'], ['title']])
})

eachBackend(t, 'the list answers { tasks, seq } in creation order', async (t, backend) => {
  const { call, task, taskPath } = await setup(t, backend)
  const second = (await call('POST', '/teams/red/tasks', { body: { title: 'second', dueDate: '2026-12-31' } })).body as Task
  const first = (await call('PATCH', taskPath, { body: { assignee: 'bob' } })).body as Task
  t.equal(first.id, task.id)
  const list = await call('GET', '/teams/red/tasks')
  t.equal(list.status, 200)
  t.same(list.body, { tasks: [first, second], seq: 3, nextCursor: null })
})
