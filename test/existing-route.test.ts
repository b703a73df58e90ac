import t, { type Test } from 'tap'
import Fastify from 'fastify'
import { jwtAuthenticator } from '../examples/jwt-auth.js'
import { atlasRealtime, type AtlasRealtimeOptions } from '../plugins/index.js'
import { api, connectClient, listenInstance, TEST_SECRET, tokenFor } from './helpers/app.js'
import { pingPong } from './helpers/ws-client.js'
import { eachBackend, repositoryOptions, testDatabase, type Backend } from './helpers/backends.js'

/**
 * An Atlas API as an integrator writes it: the suite registered first, then the routes Atlas
 * already had, which know nothing about realtime and only call the repository.
 */
async function startAtlas (t: Test, backend: Backend, routes?: AtlasRealtimeOptions['routes']) {
  const app = Fastify()
  await app.register(atlasRealtime, {
    authenticate: jwtAuthenticator(TEST_SECRET),
    database: repositoryOptions(await testDatabase(t, backend)) as AtlasRealtimeOptions['database'],
    routes
  })
  app.post<{ Params: { teamId: string }, Body: { title: string } }>('/legacy/teams/:teamId/tasks', async (request, reply) => {
    const { task } = await app.taskRepository.create(request.params.teamId, { title: request.body.title }, { actor: 'legacy-api' })
    return await reply.code(201).send(task)
  })
  app.post<{ Params: { teamId: string, taskId: string } }>('/legacy/teams/:teamId/tasks/:taskId/finish', async (request) =>
    (await app.taskRepository.update(request.params.teamId, request.params.taskId, { status: 'done' }, { actor: 'legacy-api' })).task)
  const instance = await listenInstance(t, app)
  const alice = await tokenFor('alice', ['red'])
  const client = await connectClient(t, instance, alice)
  return { instance, alice, client }
}

eachBackend(t, 'an existing route that only calls fastify.taskRepository broadcasts to the team\'s sockets', async (t, backend) => {
  const { instance, client } = await startAtlas(t, backend)
  const created = await api(instance.baseUrl, 'POST', '/legacy/teams/red/tasks', { body: { title: 'from the old API' } })
  t.equal(created.status, 201)
  const finished = await api(instance.baseUrl, 'POST', `/legacy/teams/red/tasks/${created.body.id as string}/finish`)
  t.equal(finished.status, 200)
  await client.waitFor('two events', () => client.events.length === 2)
  t.match(client.events, [
    { type: 'task.created', seq: 1, actor: 'legacy-api', task: created.body },
    { type: 'task.updated', seq: 2, actor: 'legacy-api', changes: ['status'], task: finished.body }
  ])
})

eachBackend(t, 'routes: false registers no task routes, and repository mutations still broadcast', async (t, backend) => {
  const { instance, alice, client } = await startAtlas(t, backend, false)
  for (const [method, body] of [['GET', undefined], ['POST', { title: 'x' }]] as const) {
    const response = await api(instance.baseUrl, method, '/teams/red/tasks', { token: alice, body })
    t.equal(response.status, 404, `${method} /teams/red/tasks is not a route`)
    t.equal(response.body.message, `Route ${method}:/teams/red/tasks not found`)
  }
  t.equal(await instance.app.taskRepository.headSeq('red'), 0)

  const created = await api(instance.baseUrl, 'POST', '/legacy/teams/red/tasks', { body: { title: 'still live' } })
  t.equal(created.status, 201)
  const direct = (await instance.app.taskRepository.create('red', { title: 'from a job' }, { actor: 'cron' })).task
  await client.waitFor('two events', () => client.events.length === 2)
  await pingPong(client)
  t.match(client.events, [{ seq: 1, task: created.body }, { seq: 2, actor: 'cron', task: direct }])
  t.equal(client.events.length, 2)
})
