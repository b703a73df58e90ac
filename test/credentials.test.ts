import t from 'tap'
import { api, connectClient, startInstance, tokenFor } from './helpers/app.js'

t.test('a socket whose credentials expire is closed with 4001, while a socket with valid ones stays', async (t) => {
  const dir = t.testdir()
  const instance = await startInstance(t, { databasePath: `${dir}/atlas.db`, realtime: { websocket: { heartbeatMs: 100 } } })
  const shortLived = await connectClient(t, instance, await tokenFor('alice', ['red'], '2s'))
  const longLived = await tokenFor('bob', ['red'])
  const stays = await connectClient(t, instance, longLived)
  const closed = await shortLived.closed
  t.equal(closed.code, 4001, 'closed because the credentials expired')
  t.equal(closed.reason, 'credentials expired')
  const created = await api(instance.baseUrl, 'POST', '/teams/red/tasks', { token: longLived, body: { title: 'after expiry' } })
  t.equal(created.status, 201)
  await stays.waitFor('the event after the other socket expired', () => stays.events.length === 1)
  t.equal(stays.events[0].seq, 1)
  t.equal(instance.app.atlasConnections.connectionCount, 1)
})

t.test('an expired token is refused at the upgrade and on HTTP', async (t) => {
  const dir = t.testdir()
  const instance = await startInstance(t, { databasePath: `${dir}/atlas.db` })
  const expired = await tokenFor('alice', ['red'], '-1s')
  const listed = await api(instance.baseUrl, 'GET', '/teams/red/tasks', { token: expired })
  t.equal(listed.status, 401)
  const refused = await connectClient(t, instance, expired).then(() => undefined, (err: { statusCode?: number }) => err)
  t.equal(refused?.statusCode, 401, 'upgrade refused with 401')
})
