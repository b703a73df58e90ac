import t, { type Test } from 'tap'
import Fastify from 'fastify'
import { Writable } from 'node:stream'
import { join } from 'node:path'
import { SignJWT } from 'jose'
import { atlasRealtime } from '../plugins/index.js'
import type { Principal } from '../lib/types.js'
import type { Task } from '../protocol/schemas.js'
import { TEST_SECRET, api, connectClient, listenInstance, startInstance, tokenFor } from './helpers/app.js'
import { TestClient } from './helpers/ws-client.js'

t.test('strings with lone surrogates are refused with 400 in every field; nothing stored, no event', async (t) => {
  const instance = await startInstance(t, { databasePath: join(t.testdir(), 'atlas.db') })
  const alice = await tokenFor('alice', ['red'])
  const client = await connectClient(t, instance, alice, { teams: ['red'] })
  const created = await api(instance.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 'ok' } })
  t.equal(created.status, 201)
  const task = created.body as Task
  await client.waitFor('the first event', () => client.events.length === 1)
  const before = await instance.app.taskRepository.list('red')

  // JSON.stringify writes lone surrogates as \ud800 escapes: exactly what an attacker sends.
  // (100 lone surrogates: within every field's length limit, so only the new check can refuse it.)
  const bad = ['x\ud800y', '\udc00', 'end\udbff', '\ud800'.repeat(100), 'a\udc00\ud800b']
  for (const value of bad) {
    for (const body of [{ title: value }, { title: 't', description: value }, { title: 't', assignee: value }]) {
      const response = await api(instance.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body })
      t.equal(response.status, 400, `POST ${JSON.stringify(body).slice(0, 60)}`)
      t.equal(response.body.code, 'INVALID_TASK')
      t.match(response.body.message, /not well-formed UTF-16/)
    }
    for (const body of [{ title: value }, { description: value }, { assignee: value }]) {
      const response = await api(instance.baseUrl, 'PATCH', `/teams/red/tasks/${task.id}`, { token: alice, body })
      t.equal(response.status, 400, `PATCH ${JSON.stringify(body).slice(0, 60)}`)
      t.equal(response.body.code, 'INVALID_TASK')
    }
  }
  t.same(await instance.app.taskRepository.list('red'), before, 'nothing stored, no seq taken')

  // A well-formed astral character (a surrogate pair) is fine and round-trips unchanged.
  const emoji = 'ship it 🚀 𝄞'
  const good = await api(instance.baseUrl, 'PATCH', `/teams/red/tasks/${task.id}`, { token: alice, body: { title: emoji, description: '😀'.repeat(100) } })
  t.equal(good.status, 200)
  await client.waitFor('the emoji event', () => client.events.length === 2)
  t.equal(client.events[1].seq, 2, 'no refused request produced an event in between')
  t.equal(client.events[1].type === 'task.updated' && client.events[1].task.title, emoji, 'the event carries the title as sent')
  const fetched = await api(instance.baseUrl, 'GET', `/teams/red/tasks/${task.id}`, { token: alice })
  t.equal(fetched.body.title, emoji, 'GET returns the title as sent')
  t.equal(fetched.body.description, '😀'.repeat(100))
  const list = await api(instance.baseUrl, 'GET', '/teams/red/tasks', { token: alice })
  t.same(list.body.tasks, [fetched.body], 'the list equals GET (and the event)')
  t.same(client.events[1].type === 'task.updated' && client.events[1].task, fetched.body)
})

t.test('the repository refuses lone surrogates for an integrator\'s own routes too', async (t) => {
  const instance = await startInstance(t, { databasePath: join(t.testdir(), 'atlas.db') })
  const repository = instance.app.taskRepository
  await t.rejects(repository.create('red', { title: 'x\ud800y' }, { actor: 'alice' }), { code: 'INVALID_TASK', statusCode: 400 })
  const { task } = await repository.create('red', { title: 'ok' }, { actor: 'alice' })
  await t.rejects(repository.update('red', task.id, { description: '\udfff' }, { actor: 'alice' }), { code: 'INVALID_TASK' })
  t.equal(await repository.headSeq('red'), 1)
})

async function upgradeStatus (client: TestClient): Promise<number | undefined> {
  return await client.opened().then(() => 101, (err: { statusCode?: number }) => err.statusCode)
}

/** A suite whose authenticate returns whatever the test put in the `x-principal` header (JSON), with its log lines. */
async function garbageAuthApp (t: Test): Promise<{ baseUrl: string, wsUrl: string, logs: string[] }> {
  const logs: string[] = []
  const stream = new Writable({ write (chunk: Buffer, _encoding, done) { logs.push(chunk.toString()); done() } })
  const app = Fastify({ logger: { level: 'warn', stream } })
  await app.register(atlasRealtime, {
    database: { databasePath: join(t.testdir(), 'atlas.db') },
    authenticate: (request) => {
      const header = request.headers['x-principal']
      return typeof header === 'string' ? JSON.parse(header) as Principal : null
    }
  })
  const instance = await listenInstance(t, app)
  return { ...instance, logs }
}

t.test('a principal with a bad user id or team id from authenticate is refused with 401, HTTP and upgrade', async (t) => {
  const { baseUrl, wsUrl, logs } = await garbageAuthApp(t)
  const credential = 'Bearer secret-credential-0123456789'
  const garbage: unknown[] = [
    { userId: 'alice', teams: ['*', '../x'] },
    { userId: 'alice', teams: ['red', '*'] },
    { userId: 'alice', teams: ['red', ''] },
    { userId: 'alice', teams: ['red', 'a'.repeat(65)] },
    { userId: 'alice', teams: ['red', 5] },
    { userId: 'alice', teams: 'red' },
    { userId: '', teams: ['red'] },
    { userId: 7, teams: ['red'] },
    { userId: 'a'.repeat(129), teams: ['red'] },
    { userId: 'x\ud800', teams: ['red'] },
    { teams: ['red'] }
  ]
  for (const principal of garbage) {
    const headers = { 'x-principal': JSON.stringify(principal), authorization: credential }
    const response = await api(baseUrl, 'GET', '/teams/red/tasks', { headers })
    t.equal(response.status, 401, `HTTP ${JSON.stringify(principal)}`)
    t.equal(response.body.code, 'UNAUTHORIZED')
    const client = new TestClient(`${wsUrl}?teams=red`, { headers })
    t.teardown(async () => { await client.close() })
    t.equal(await upgradeStatus(client), 401, `upgrade ${JSON.stringify(principal)}`)
  }
  // Without teams=, the principal's own team list decides the subscriptions: still refused.
  const client = new TestClient(wsUrl, { headers: { 'x-principal': JSON.stringify({ userId: 'alice', teams: ['*', '../x'] }) } })
  t.teardown(async () => { await client.close() })
  t.equal(await upgradeStatus(client), 401, 'upgrade without teams=')

  const warnings = logs.filter((line) => line.includes('invalid principal'))
  t.ok(warnings.length >= garbage.length * 2, 'each refusal is logged as a warning')
  t.match(JSON.parse(warnings[0]), { level: 40, problem: 'teams[0] does not match the team id pattern' })
  t.notOk(logs.some((line) => line.includes('secret-credential') || line.includes('../x') || line.includes('aaaaaaaaaa')), 'no credential nor principal value in any log line')

  // The limits are inclusive: 128 characters of user id and a 64-character team id are fine.
  const ok = { userId: 'u'.repeat(128), teams: ['red', 'b'.repeat(64)] }
  const response = await api(baseUrl, 'GET', '/teams/red/tasks', { headers: { 'x-principal': JSON.stringify(ok) } })
  t.equal(response.status, 200)
})

t.test('the example refuses tokens without exp, living over 24 h, with an empty sub or a bad team id', async (t) => {
  const instance = await startInstance(t, { databasePath: join(t.testdir(), 'atlas.db') })
  const key = new TextEncoder().encode(TEST_SECRET)
  const now = Math.floor(Date.now() / 1000)
  const sign = async (claims: { sub?: string, teams?: unknown, iat?: number, exp?: number }): Promise<string> => {
    const { sub, iat, exp, ...rest } = claims
    const jwt = new SignJWT(rest).setProtectedHeader({ alg: 'HS256' })
    if (sub !== undefined) jwt.setSubject(sub)
    if (iat !== undefined) jwt.setIssuedAt(iat)
    if (exp !== undefined) jwt.setExpirationTime(exp)
    return await jwt.sign(key)
  }
  const status = async (token: string): Promise<number> => (await api(instance.baseUrl, 'GET', '/teams/red/tasks', { token })).status
  const refused: Array<[string, Parameters<typeof sign>[0]]> = [
    ['no exp', { sub: 'alice', teams: ['red'], iat: now }],
    ['no exp nor iat', { sub: 'alice', teams: ['red'] }],
    ['exp 25 h after iat', { sub: 'alice', teams: ['red'], iat: now, exp: now + 25 * 3600 }],
    ['exp 25 h ahead, no iat', { sub: 'alice', teams: ['red'], exp: now + 25 * 3600 }],
    ['issued 30 h ago, 1 h left', { sub: 'alice', teams: ['red'], iat: now - 30 * 3600, exp: now + 3600 }],
    ['iat in the future, exp 25 h ahead', { sub: 'alice', teams: ['red'], iat: now + 20 * 3600, exp: now + 25 * 3600 }],
    ['empty sub', { sub: '', teams: ['red'], iat: now, exp: now + 3600 }],
    ['no sub', { teams: ['red'], iat: now, exp: now + 3600 }],
    ['team *', { sub: 'alice', teams: ['red', '*'], iat: now, exp: now + 3600 }],
    ['team ../x', { sub: 'alice', teams: ['../x'], iat: now, exp: now + 3600 }]
  ]
  for (const [label, claims] of refused) t.equal(await status(await sign(claims)), 401, label)
  t.equal(await status(await sign({ sub: 'alice', teams: ['red'], iat: now, exp: now + 24 * 3600 })), 200, 'exactly 24 h is accepted')
  t.equal(await status(await sign({ sub: 'alice', teams: ['red'], iat: now - 23 * 3600, exp: now + 3600 })), 200, 'issued 23 h ago, 1 h left')
  t.equal(await status(await tokenFor('alice', ['red'])), 200, 'the demo tokens (12 h) are accepted')
  // A refused token is refused again (not cached as valid) and a valid one stays valid.
  const noExp = await sign({ sub: 'alice', teams: ['red'] })
  t.equal(await status(noExp), 401)
})
