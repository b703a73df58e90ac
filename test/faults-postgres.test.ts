/**
 * PostgreSQL restarted under load. An instance (its own process, so that an exit is seen and
 * does not take the test with it) reaches the machine's PostgreSQL server through a TCP proxy;
 * clients are subscribed and a writer makes mutations steadily. The server "restarts": the
 * test's database's sessions are terminated (the admin shutdown a restart sends), the proxy
 * refuses new connections and drops the open ones; later it listens again. The shared server
 * itself is never stopped: other tests use it.
 */
import t from 'tap'
import pg from 'pg'
import { connectClient, seqRange, seqReport, tokenFor, waitUntil } from './helpers/app.js'
import { openTestRepository, testDatabase } from './helpers/backends.js'
import { startChildInstance } from './helpers/child-instance.js'
import { POSTGRES_SERVER_URL } from './helpers/postgres.js'
import { startTcpProxy } from './helpers/tcp-proxy.js'
import { pingPong, seqsOf, type TestClient } from './helpers/ws-client.js'

/**
 * Longer than the longest wait the instance's PostgreSQL settings allow (5 s to connect, 15 s
 * for a query): an answer later than this is a hang, not a slow failure.
 */
const ANSWER_BOUND_MS = 30_000
/** A client's pause before retrying a mutation answered 503 (it would back off too). */
const RETRY_AFTER_MS = 50

type Phase = 'up' | 'going down' | 'down' | 'coming back' | 'back'

interface Attempt {
  key: string
  /** The phase when the request was sent, and when it was answered. */
  sent: Phase
  answered: Phase
  /** HTTP status, or 0 when no answer came (`error` says why). */
  status: number
  code?: string
  error?: string
  replayed: boolean
  /** The task the answer carries (2xx). */
  taskId?: string
  ms: number
}

const acknowledges = (a: Attempt): boolean => a.status >= 200 && a.status <= 299
/** Anything but 2xx or "the database is unavailable, try again": a 500, a 4xx, no answer at all. */
const isWrong = (a: Attempt): boolean => !acknowledges(a) && !(a.status === 503 && a.code === 'DATABASE_UNAVAILABLE')

interface Mutation {
  key: string
  team: string
  taskId: string
  /** The title it sets: unique, so its event can be found in the log. */
  title: string
}

/**
 * Mutations over HTTP from `workers` concurrent loops, one at a time each: a create, then
 * title updates of the task it created, in turn over the teams. Each carries an Idempotency-Key;
 * one answered 5xx (or not at all) is sent again with the same key until it is answered 2xx, as
 * a client would (a first attempt that committed although its answer was lost is then replayed,
 * not applied twice). The test judges each answer afterwards; retrying a wrong one too keeps the
 * scenario going, so that a failure shows all that went wrong, not only the first.
 */
function write (baseUrl: string, token: string, teams: string[], workers: number, phase: () => Phase) {
  const attempts: Attempt[] = []
  const acknowledged: Mutation[] = []
  let stopped = false
  let counter = 0
  const send = async (key: string, method: string, path: string, body: unknown): Promise<Attempt> => {
    const sent = phase()
    const started = Date.now()
    const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': key }
    try {
      const response = await fetch(baseUrl + path, { method, headers, body: JSON.stringify(body), signal: AbortSignal.timeout(ANSWER_BOUND_MS) })
      const text = await response.text()
      const parsed = text === '' ? {} : JSON.parse(text)
      return { key, sent, answered: phase(), status: response.status, code: parsed.code, replayed: response.headers.get('idempotency-replayed') === 'true', taskId: response.ok ? parsed.id : undefined, ms: Date.now() - started }
    } catch (err) {
      return { key, sent, answered: phase(), status: 0, error: `${(err as Error).name}: ${(err as Error).message}`, replayed: false, ms: Date.now() - started }
    }
  }
  const worker = async (w: number): Promise<void> => {
    const tasks = new Map<string, string>()
    while (!stopped) {
      const n = counter++
      const team = teams[n % teams.length]
      const key = `w${w}-m${n}`
      const existing = tasks.get(team)
      const title = existing === undefined ? `create ${key}` : `update ${key}`
      for (;;) {
        const attempt = existing === undefined
          ? await send(key, 'POST', `/teams/${team}/tasks`, { title })
          : await send(key, 'PATCH', `/teams/${team}/tasks/${existing}`, { title })
        attempts.push(attempt)
        if (acknowledges(attempt) && attempt.taskId !== undefined) {
          const taskId = attempt.taskId
          tasks.set(team, taskId)
          acknowledged.push({ key, team, taskId, title })
          break
        }
        // A 4xx will not change with a retry: this worker stops (the test reports it).
        if (attempt.status > 0 && attempt.status < 500) return
        await new Promise((resolve) => setTimeout(resolve, RETRY_AFTER_MS))
      }
    }
  }
  const running = Promise.all(Array.from({ length: workers }, async (_, w) => { await worker(w) }))
  return {
    attempts,
    acknowledged,
    stop: async () => { stopped = true; await running }
  }
}

t.test('PostgreSQL restarted under load: 503 DATABASE_UNAVAILABLE while it is down, nothing committed lost, every client every event once, in order', async (t) => {
  const database = await testDatabase(t, 'postgresql')
  const direct = new URL(database.databaseUrl ?? '')
  const proxy = await startTcpProxy(t, Number(direct.port || 5432))
  const throughProxy = new URL(direct.href)
  throughProxy.port = String(proxy.port)
  // The outbox relay runs every 200 ms: several of its rounds fall in the outage.
  const instance = await startChildInstance(t, { databaseUrl: throughProxy.href, relayIntervalMs: 200, logWarnings: true })
  const readiness = async (): Promise<string> => await fetch(`${instance.baseUrl}/health/ready`, { signal: AbortSignal.timeout(ANSWER_BOUND_MS) })
    .then(async (r) => `${r.status} database ${String(((await r.json()) as { checks?: { database?: boolean } }).checks?.database)}`, (err: Error) => `no answer: ${err.message}`)
  const teams = ['red', 'blue']
  const writerToken = await tokenFor('writer', teams)
  const clients: Array<{ name: string, client: TestClient, teams: string[] }> = [
    { name: 'alice 1', client: await connectClient(t, instance, await tokenFor('alice', teams)), teams },
    { name: 'alice 2', client: await connectClient(t, instance, await tokenFor('alice', teams)), teams },
    { name: 'bob', client: await connectClient(t, instance, await tokenFor('bob', ['red'])), teams: ['red'] }
  ]
  let exitedEarly: string | undefined
  instance.exited.then(({ code, signal }) => { exitedEarly = `the instance exited (${code ?? signal}): ${instance.stderr()}` }, () => {})

  let phase: Phase = 'up'
  const writer = write(instance.baseUrl, writerToken, teams, 2, () => phase)
  const answeredIn = (p: Phase): Attempt[] => writer.attempts.filter((a) => a.sent === p && a.answered === p)
  // A wait also ends as soon as the scenario cannot go on, so that the assertions below say why.
  const broken = (): boolean => exitedEarly !== undefined || writer.attempts.some((a) => a.status > 0 && a.status < 500 && !acknowledges(a))
  await waitUntil('30 mutations before the fault', () => writer.acknowledged.length >= 30 || broken(), 20_000)

  // The restart: the server ends the database's sessions (admin shutdown, 57P01), then nothing
  // listens and whatever connection was left is gone.
  phase = 'going down'
  const admin = new pg.Client({ connectionString: POSTGRES_SERVER_URL })
  await admin.connect()
  t.teardown(async () => { await admin.end().catch(() => {}) })
  const terminated = await admin.query('select count(*)::int as n from (select pg_terminate_backend(pid) from pg_stat_activity where datname = $1) as ended', [direct.pathname.slice(1)])
  await proxy.cut()
  phase = 'down'
  await waitUntil('20 mutations answered while PostgreSQL is down', () => answeredIn('down').length >= 20 || broken(), ANSWER_BOUND_MS * 2)
  const health = await fetch(`${instance.baseUrl}/health/live`, { signal: AbortSignal.timeout(ANSWER_BOUND_MS) }).then((r) => r.status, (err: Error) => err.message)
  const readyWhileDown = await readiness()

  phase = 'coming back'
  await proxy.restore()
  phase = 'back'
  const before = writer.acknowledged.length
  await waitUntil('30 mutations acknowledged after PostgreSQL is back', () => writer.acknowledged.length >= before + 30 || broken(), ANSWER_BOUND_MS * 2)
  await writer.stop()
  const readyAfter = await readiness()

  t.equal(exitedEarly, undefined, 'the instance never exited')
  t.equal(health, 200, 'the instance answered /health/live while PostgreSQL was down')
  t.equal(readyWhileDown, '503 database false', 'and /health/ready said the database is not writable')
  t.equal(readyAfter, '200 database true', 'ready again once it is back')
  t.same(writer.attempts.filter((a) => a.status === 0), [], `every request was answered within ${ANSWER_BOUND_MS} ms (no hang)`)
  t.same(writer.attempts.filter((a) => a.status !== 0 && isWrong(a)), [], 'every answer was 2xx, or 503 DATABASE_UNAVAILABLE')
  const down = answeredIn('down')
  t.ok(down.length >= 20, `mutations were tried while PostgreSQL was down (${down.length})`)
  t.same(down.filter((a) => a.status !== 503 || a.code !== 'DATABASE_UNAVAILABLE'), [], 'each of them was answered 503 DATABASE_UNAVAILABLE')
  t.ok(answeredIn('back').filter(acknowledges).length >= 30, 'mutations succeed again once it is back')

  // Nothing committed is lost, nothing is applied twice: one event per acknowledged mutation
  // (read straight from the server, not through the proxy).
  const { repository } = await openTestRepository(t, database)
  const log = Object.fromEntries(await Promise.all(teams.map(async (team) => [team, await repository.eventsAfter(team, 0, 100_000)] as const)))
  for (const team of teams) {
    const mutations = writer.acknowledged.filter((m) => m.team === team)
    const events = log[team]
    t.same(events.map((e) => e.seq), seqRange(1, events.length), `${team}: the log's seqs are gapless`)
    t.same(events.map((e) => JSON.parse(e.payload).task.title).sort(), mutations.map((m) => m.title).sort(), `${team}: exactly one event per acknowledged mutation`)
    const last = new Map(mutations.map((m) => [m.taskId, m.title]))
    const { tasks } = await repository.list(team)
    t.same(new Map(tasks.map((task) => [task.id, task.title])), last, `${team}: every task as its last acknowledged mutation left it`)
  }

  const lines: string[] = []
  for (const { name, client, teams: subscribed } of clients) {
    await client.waitFor(`${name} to hold every event`, () => subscribed.every((team) => client.lastSeq(team) >= log[team].length), 30_000)
    await pingPong(client)
    for (const team of subscribed) {
      const seqs = seqsOf(client.events, team)
      const report = seqReport(seqs, log[team].length)
      lines.push(`${name} ${team}: committed ${log[team].length}, delivered ${report.delivered}, duplicates ${report.duplicates}, reorderings ${report.reorderings}, missing ${report.missing.length}`)
      t.same(seqs, seqRange(1, log[team].length), `${name} ${team}: every committed event exactly once, in order`)
      t.same(client.events.filter((e) => e.teamId === team).map((e) => JSON.stringify(e)), log[team].map((e) => e.payload), `${name} ${team}: the events are the log's`)
    }
  }

  const replayed = writer.acknowledged.length - writer.attempts.filter((a) => acknowledges(a) && !a.replayed).length
  const answers = new Map<string, number>()
  for (const a of writer.attempts) {
    const kind = `${a.sent}→${a.answered} ${a.status === 0 ? a.error ?? '' : `${a.status} ${a.code ?? ''}`}`.trim()
    answers.set(kind, (answers.get(kind) ?? 0) + 1)
  }
  t.comment(`sessions terminated: ${terminated.rows[0].n}; mutations acknowledged: ${writer.acknowledged.length}, ${replayed} of them by a replay (committed, answered 5xx, retried); ` +
    `slowest answer while down: ${Math.max(0, ...down.map((a) => a.ms))} ms`)
  t.comment(`answers (phase sent→answered, status): ${[...answers].map(([kind, n]) => `${n}× ${kind}`).join('; ')}`)
  for (const line of lines) t.comment(line)
  // What the instance logged as errors (once per kind): why a request was answered 500, say.
  const logged = new Map<string, number>()
  for (const line of instance.stderr().split('\n')) {
    if (!line.startsWith('{')) continue
    const entry = JSON.parse(line) as { level: number, msg?: string, err?: { type?: string, message?: string, code?: string, cause?: { message?: string, code?: string } } }
    if (entry.level < 50) continue
    const { err } = entry
    const kind = `${entry.msg ?? ''}: ${err?.type ?? ''} ${err?.code ?? ''} ${err?.message ?? ''}${err?.cause === undefined ? '' : ` (cause: ${err.cause.code ?? ''} ${err.cause.message ?? ''})`}`
    logged.set(kind, (logged.get(kind) ?? 0) + 1)
  }
  for (const [kind, times] of logged) t.comment(`the instance logged ${times}×: ${kind}`)
})
