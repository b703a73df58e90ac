/**
 * Issue #13, point 1: an open socket takes a fresh credential (a `refresh` frame) without
 * reconnecting: its expiry moves, teams it lost are unsubscribed with reason `revoked`, new
 * ones may be subscribed; a refused refresh closes it with 4001 as an expiry does; refreshes
 * are rate-limited per socket. Before, a socket kept its upgrade's credential until it closed.
 */
import t from 'tap'
import Fastify from 'fastify'
import { jwtAuthenticator, jwtVerifier } from '../examples/jwt-auth.js'
import { atlasRealtime } from '../plugins/index.js'
import { TEST_SECRET, api, connectClient, listenInstance, startInstance, tokenFor, waitUntil } from './helpers/app.js'
import { pingPong, seqsOf } from './helpers/ws-client.js'

const checkToken = jwtVerifier(TEST_SECRET)

t.test('a refresh moves the expiry: the socket outlives its first credential and misses nothing', async (t) => {
  const instance = await startInstance(t, { databasePath: `${t.testdir()}/atlas.db`, realtime: { authenticateToken: checkToken, websocket: { heartbeatMs: 100 } } })
  const writer = await tokenFor('bob', ['red'])
  const client = await connectClient(t, instance, await tokenFor('alice', ['red'], '4s'), { teams: ['red'] })
  const welcome = await client.waitForFrame('welcome')
  t.ok(typeof welcome.expiresAt === 'number' && welcome.expiresAt > Date.now(), 'welcome says when the credential expires')
  await api(instance.baseUrl, 'POST', '/teams/red/tasks', { token: writer, body: { title: 'before' } })
  client.send({ type: 'refresh', token: await tokenFor('alice', ['red'], '1h') })
  const refreshed = await client.waitForFrame('refreshed')
  t.same(refreshed.teams, ['red'])
  t.ok((refreshed.expiresAt as number) > Date.now() + 3_500_000, 'the new expiry')
  // The first credential's expiry passes (heartbeat rounds every 100 ms check it): still open.
  const firstExpiry = welcome.expiresAt as number
  await waitUntil('the first credential\'s expiry and two heartbeat rounds passed', () => Date.now() > firstExpiry + 250)
  await api(instance.baseUrl, 'POST', '/teams/red/tasks', { token: writer, body: { title: 'after' } })
  await client.waitFor('both events', () => client.events.length === 2)
  t.same(seqsOf(client.events, 'red'), [1, 2])
  t.equal(client.socket.readyState, 1, 'not closed with 4001')
})

t.test('a refresh changes teams at once: lost ones unsubscribed as revoked, new ones subscribable', async (t) => {
  const instance = await startInstance(t, { databasePath: `${t.testdir()}/atlas.db`, realtime: { authenticateToken: checkToken } })
  const writer = await tokenFor('bob', ['red', 'blue', 'green'])
  const client = await connectClient(t, instance, await tokenFor('alice', ['red', 'blue']), { teams: ['red', 'blue'] })
  client.send({ type: 'refresh', token: await tokenFor('alice', ['red', 'green']) })
  await client.waitFor('unsubscribed blue', () => client.frames.some((f) => f.type === 'unsubscribed' && f.teamId === 'blue'))
  t.match(client.frames.find((f) => f.type === 'unsubscribed'), { teamId: 'blue', reason: 'revoked' })
  t.same((await client.waitForFrame('refreshed')).teams, ['red', 'green'])
  await api(instance.baseUrl, 'POST', '/teams/blue/tasks', { token: writer, body: { title: 'for blue' } })
  client.send({ type: 'subscribe', teams: ['green'] })
  await client.waitFor('subscribed green', () => client.frames.some((f) => f.type === 'subscribed' && f.teamId === 'green'))
  await api(instance.baseUrl, 'POST', '/teams/green/tasks', { token: writer, body: { title: 'for green' } })
  await client.waitFor('the green event', () => client.events.some((e) => e.teamId === 'green'))
  client.send({ type: 'subscribe', teams: ['blue'] })
  await client.waitFor('blue refused', () => client.frames.some((f) => f.type === 'error' && f.code === 'forbidden_team'))
  await pingPong(client)
  t.same(client.events.filter((e) => e.teamId === 'blue'), [], 'no event of the lost team')
})

t.test('a refused refresh closes with 4001; so does a credential of another user', async (t) => {
  const instance = await startInstance(t, { databasePath: `${t.testdir()}/atlas.db`, realtime: { authenticateToken: checkToken } })
  const forged = await connectClient(t, instance, await tokenFor('alice', ['red']))
  forged.send({ type: 'refresh', token: 'not-a-jwt' })
  t.same(await forged.closed, { code: 4001, reason: 'unauthorized: refresh refused' })
  const expired = await connectClient(t, instance, await tokenFor('alice', ['red']))
  expired.send({ type: 'refresh', token: await tokenFor('alice', ['red'], '-1s') })
  t.equal((await expired.closed).code, 4001, 'an expired token')
  const other = await connectClient(t, instance, await tokenFor('alice', ['red']))
  other.send({ type: 'refresh', token: await tokenFor('mallory', ['red']) })
  t.equal((await other.closed).code, 4001, 'a valid token for someone else')
})

t.test('refreshes are limited per socket, and unsupported without authenticateToken', async (t) => {
  const instance = await startInstance(t, { databasePath: `${t.testdir()}/atlas.db`, realtime: { authenticateToken: checkToken, websocket: { maxRefreshesPerMinute: 3 } } })
  const client = await connectClient(t, instance, await tokenFor('alice', ['red']))
  const token = await tokenFor('alice', ['red'])
  for (let i = 0; i < 4; i++) client.send({ type: 'refresh', token })
  await client.waitFor('three refreshed and one refusal', () =>
    client.frames.filter((f) => f.type === 'refreshed').length === 3 && client.frames.some((f) => f.type === 'error' && f.code === 'rate_limited'))
  t.match(client.frames.find((f) => f.type === 'error'), { code: 'rate_limited', message: /3 per minute/ })

  // A host that gave no authenticateToken (the example always gives one).
  const plainApp = Fastify()
  await plainApp.register(atlasRealtime, { database: { databasePath: `${t.testdir()}/plain.db` }, authenticate: jwtAuthenticator(TEST_SECRET) })
  const plain = await listenInstance(t, plainApp)
  const old = await connectClient(t, plain, await tokenFor('alice', ['red']))
  old.send({ type: 'refresh', token })
  t.match(await old.waitForFrame('error'), { code: 'refresh_unsupported' })
  await pingPong(old)
  t.equal(old.socket.readyState, 1, 'the socket carries on with its credential')
})

t.test('revoke on this instance: a user\'s sockets close with 4004; a membership unsubscribes the team', async (t) => {
  const instance = await startInstance(t, { databasePath: `${t.testdir()}/atlas.db` })
  const alice = await tokenFor('alice', ['red', 'blue'])
  const first = await connectClient(t, instance, alice)
  const second = await connectClient(t, instance, alice)
  const bob = await connectClient(t, instance, await tokenFor('bob', ['red', 'blue']))
  t.equal(instance.app.atlasConnections.revoke('bob', 'blue'), 1)
  await bob.waitFor('blue revoked', () => bob.frames.some((f) => f.type === 'unsubscribed' && f.teamId === 'blue' && f.reason === 'revoked'))
  bob.send({ type: 'subscribe', teams: ['blue'] })
  await bob.waitFor('blue refused', () => bob.frames.some((f) => f.type === 'error' && f.code === 'forbidden_team'))
  t.equal(instance.app.atlasConnections.revoke('alice'), 2)
  t.same(await first.closed, { code: 4004, reason: 'revoked' })
  t.same(await second.closed, { code: 4004, reason: 'revoked' })
  await pingPong(bob)
  t.equal(bob.socket.readyState, 1, 'another user is untouched')
})
