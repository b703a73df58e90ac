/**
 * Durable idempotency: a mutation retried with the same Idempotency-Key is applied once (one
 * task, one event), the retry gets the original result, a key reused for a different request
 * is refused with 409 and changes nothing, and all of this survives a restart, on SQLite and on PostgreSQL.
 */
import t from 'tap'
import type { TaskRepository } from '../lib/repository.js'
import { api, connectClient, startInstance, tokenFor } from './helpers/app.js'
import { eachBackend, openTestRepository, testDatabase } from './helpers/backends.js'
import { pingPong, seqsOf } from './helpers/ws-client.js'

/** What team red holds, read through a repository of the test's own (it outlives the instances). */
async function counts (repository: TaskRepository): Promise<{ tasks: number, events: number, head: number }> {
  return {
    tasks: (await repository.list('red')).tasks.length,
    events: (await repository.eventsAfter('red', 0, 10_000)).length,
    head: await repository.headSeq('red')
  }
}

eachBackend(t, 'retries with the same Idempotency-Key are applied once, also after a restart', async (t, backend) => {
  const database = await testDatabase(t, backend)
  const { repository } = await openTestRepository(t, database)
  const first = await startInstance(t, { ...database })
  const alice = await tokenFor('alice', ['red'])
  const client = await connectClient(t, first, alice)
  const key = (k: string): Record<string, string> => ({ 'idempotency-key': k })

  // Create, retried.
  const created = await api(first.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 'pay rent' }, headers: key('create-1') })
  t.equal(created.status, 201)
  t.equal(created.headers.get('idempotency-replayed'), null)
  const retried = await api(first.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 'pay rent' }, headers: key('create-1') })
  t.equal(retried.status, 200, 'the retry is answered with the stored result')
  t.equal(retried.headers.get('idempotency-replayed'), 'true')
  t.same(retried.body, created.body, 'the same task, id and all')
  t.same(await counts(repository), { tasks: 1, events: 1, head: 1 }, 'one task, one event')

  // Same key, different request: 409, nothing changes.
  const conflict = await api(first.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 'pay rent twice' }, headers: key('create-1') })
  t.equal(conflict.status, 409)
  t.equal(conflict.body.code, 'MUTATION_ID_CONFLICT')
  t.same(await counts(repository), { tasks: 1, events: 1, head: 1 }, 'the conflicting request changed nothing')

  // Update, retried: one version bump, one event.
  const id = created.body.id as string
  const patched = await api(first.baseUrl, 'PATCH', `/teams/red/tasks/${id}`, { token: alice, body: { status: 'in_progress' }, headers: key('patch-1') })
  t.equal(patched.status, 200)
  t.equal(patched.body.version, 2)
  const patchedAgain = await api(first.baseUrl, 'PATCH', `/teams/red/tasks/${id}`, { token: alice, body: { status: 'in_progress' }, headers: key('patch-1') })
  t.equal(patchedAgain.headers.get('idempotency-replayed'), 'true')
  t.same(patchedAgain.body, patched.body)
  const samePatchOtherTask = await api(first.baseUrl, 'PATCH', `/teams/red/tasks/${id}`, { token: alice, body: { status: 'done' }, headers: key('patch-1') })
  t.equal(samePatchOtherTask.status, 409, 'the same key with another patch is a conflict')
  // The same key from another user is another mutation.
  const bob = await tokenFor('bob', ['red'])
  const bobs = await api(first.baseUrl, 'POST', '/teams/red/tasks', { token: bob, body: { title: 'pay rent' }, headers: key('create-1') })
  t.equal(bobs.status, 201, 'keys are scoped to the actor')
  t.not(bobs.body.id, id)

  await client.waitFor('3 events', () => client.events.length >= 3)
  await pingPong(client)
  t.same(seqsOf(client.events, 'red'), [1, 2, 3], 'clients saw each applied mutation once')
  t.same(client.events.map((e) => [e.type, e.mutationId]), [['task.created', 'create-1'], ['task.updated', 'patch-1'], ['task.created', 'create-1']])

  // Restart: a new instance on the same database still knows the keys.
  await first.close()
  const second = await startInstance(t, { ...database })
  const afterRestart = await api(second.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 'pay rent' }, headers: key('create-1') })
  t.equal(afterRestart.status, 200)
  t.equal(afterRestart.headers.get('idempotency-replayed'), 'true')
  t.same(afterRestart.body, created.body, 'the original result, from the database')
  const patchAfterRestart = await api(second.baseUrl, 'PATCH', `/teams/red/tasks/${id}`, { token: alice, body: { status: 'in_progress' }, headers: key('patch-1') })
  t.same(patchAfterRestart.body, patched.body)
  const conflictAfterRestart = await api(second.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 'other' }, headers: key('create-1') })
  t.equal(conflictAfterRestart.status, 409)

  // Delete, retried: 204 both times, one event.
  const deleted = await api(second.baseUrl, 'DELETE', `/teams/red/tasks/${id}`, { token: alice, headers: key('delete-1') })
  t.equal(deleted.status, 204)
  const deletedAgain = await api(second.baseUrl, 'DELETE', `/teams/red/tasks/${id}`, { token: alice, headers: key('delete-1') })
  t.equal(deletedAgain.status, 204, 'a retried delete is not a 404')
  t.equal(deletedAgain.headers.get('idempotency-replayed'), 'true')
  t.same(await counts(repository), { tasks: 1, events: 4, head: 4 }, 'create, update, bob\'s create, delete: four events, no more')
})

eachBackend(t, 'concurrent retries on two instances sharing the database are applied once', async (t, backend) => {
  const database = await testDatabase(t, backend)
  const { repository } = await openTestRepository(t, database)
  const a = await startInstance(t, { ...database })
  const b = await startInstance(t, { ...database })
  const alice = await tokenFor('alice', ['red'])
  const responses = await Promise.all(Array.from({ length: 10 }, async (_, i) =>
    await api(i % 2 === 0 ? a.baseUrl : b.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 'once' }, headers: { 'idempotency-key': 'same-key' } })))
  t.same(responses.map((r) => r.status).sort(), [200, 200, 200, 200, 200, 200, 200, 200, 200, 201], 'one 201, the rest replays')
  t.equal(new Set(responses.map((r) => r.body.id)).size, 1, 'all answered with the same task')
  t.same(await counts(repository), { tasks: 1, events: 1, head: 1 })
})
