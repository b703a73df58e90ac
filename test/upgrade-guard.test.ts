/**
 * Issue #10: an upgrade to a route that is not the WebSocket route was answered 101 and then
 * closed by @fastify/websocket. Every other route now refuses it with a plain 404.
 */
import t from 'tap'
import { buildExampleApp } from '../examples/app.js'
import { TEST_SECRET, api, connectClient, listenInstance, tokenFor } from './helpers/app.js'
import { rawRequest } from './helpers/raw-request.js'
import { TestClient } from './helpers/ws-client.js'

t.test('only the WebSocket route answers an upgrade; every other route refuses it with 404 and runs nothing', async (t) => {
  const app = await buildExampleApp({ jwtSecret: TEST_SECRET, databasePath: `${t.testdir()}/atlas.db` })
  // The integrator's own route, declared after the suite like /health.
  let reached = 0
  app.post('/integrator/hook', async () => { reached++; return { ok: true } })
  const instance = await listenInstance(t, app)
  const port = Number(new URL(instance.baseUrl).port)
  const token = await tokenFor('alice', ['red'])
  const authorization = `Bearer ${token}`

  for (const [method, path] of [['GET', '/health'], ['GET', '/'], ['GET', '/teams/red/tasks'], ['POST', '/teams/red/tasks'], ['POST', '/integrator/hook']]) {
    const outcome = await rawRequest({ host: '127.0.0.1', port, method, path }, { upgrade: true, headers: { authorization } })
    t.equal(outcome.status, 404, `${method} ${path}: refused, not switched`)
    t.match(outcome.body, { statusCode: 404, code: 'NOT_A_WEBSOCKET_ROUTE', error: 'Not Found' }, `${method} ${path}: a JSON body with a code`)
  }
  t.equal(reached, 0, 'the integrator route did not run')
  t.same((await api(instance.baseUrl, 'GET', '/teams/red/tasks', { token })).body.tasks, [], 'the upgrade created no task')

  const unknown = await rawRequest({ host: '127.0.0.1', port, method: 'GET', path: '/nope' }, { upgrade: true })
  t.equal(unknown.status, 404, 'an unknown path is refused as before')

  // A WebSocket client sees a refusal it can tell apart from a network error.
  const health = new TestClient(`${instance.wsUrl.replace('/realtime', '/health')}?access_token=${token}`)
  const refused = await health.opened().then(() => undefined, (err: { statusCode?: number }) => err)
  t.equal(refused?.statusCode, 404, 'ws: unexpected-response 404')

  // The same routes still serve plain HTTP, and the WebSocket route still upgrades.
  t.equal((await api(instance.baseUrl, 'GET', '/health')).status, 200)
  t.equal((await api(instance.baseUrl, 'POST', '/integrator/hook')).status, 200)
  const client = await connectClient(t, instance, token, { teams: ['red'] })
  t.equal(instance.app.atlasConnections.connectionCount, 1)
  await client.close()
})
