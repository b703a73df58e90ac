import t from 'tap'
import { api, connectClient, startInstance, tokenFor } from './helpers/app.js'

t.test('a task created over HTTP reaches a subscribed socket of the team', async (t) => {
  const dir = t.testdir()
  const instance = await startInstance(t, { databasePath: `${dir}/atlas.db` })
  const alice = await tokenFor('alice', ['red'])
  const client = await connectClient(t, instance, alice)
  const created = await api(instance.baseUrl, 'POST', '/teams/red/tasks', { token: alice, body: { title: 'first' } })
  t.equal(created.status, 201)
  await client.waitFor('one event', () => client.events.length === 1)
  t.equal(client.events[0].type, 'task.created')
  t.equal(client.events[0].seq, 1)
  t.same((client.events[0] as any).task, created.body)
})
