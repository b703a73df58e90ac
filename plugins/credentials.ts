import fp from 'fastify-plugin'
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import type { IncomingMessage, Server } from 'node:http'
import type { Duplex } from 'node:stream'
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import { bearerOf, takeAccessToken, takeSubprotocolToken } from '../lib/access-token.js'

const NAME = 'atlas-credentials'
const kQueryToken = Symbol('atlas.queryToken')
const kSubprotocolToken = Symbol('atlas.subprotocolToken')

type CarriesToken = IncomingMessage & { [kQueryToken]?: string, [kSubprotocolToken]?: string }

/**
 * The bearer credential of a request, from the first of these that carries one:
 * 1. the `Authorization: Bearer …` header (any request);
 * 2. the `Sec-WebSocket-Protocol` entry `base64url.bearer.atlas.…` (upgrades: how a browser,
 *    which cannot set a header on a WebSocket, sends it);
 * 3. the `access_token` query parameter (upgrades only: a token in the URL of a plain HTTP
 *    request is no credential, it is dropped).
 * The last two are taken out of the request by the atlas-credentials plugin before anything
 * routes or logs it. undefined when none carries one: a cookie or an API key header is read by
 * the host's own `authenticate`.
 */
export function accessTokenOf (request: FastifyRequest | IncomingMessage): string | undefined {
  const raw = ('raw' in request ? request.raw : request) as CarriesToken
  return bearerOf(raw.headers.authorization) ?? raw[kSubprotocolToken] ?? raw[kQueryToken]
}

/**
 * Takes `access_token` out of every request URL before Fastify routes or logs it, so that no
 * log line (the request serializer's, Fastify's 404, @fastify/websocket's "no websocket
 * handler", the integrator's own) can carry it, and nothing downstream parses it from the query.
 * Register it before anything else.
 */
const credentialsPlugin: FastifyPluginAsync = async (fastify) => {
  // Plain requests: Node publishes each one on this channel just before it emits 'request', on
  // every server. Listening on fastify.server alone would miss the second server Fastify opens
  // for `listen({ host: 'localhost' })` (its default) on IPv4 and IPv6, which calls the router
  // directly. Only servers that route into this instance are touched.
  const ours = new WeakMap<object, boolean>()
  const isOurs = (server: object): boolean => {
    let known = ours.get(server)
    if (known === undefined) {
      known = server === fastify.server || (server as Server).listeners('request').includes(fastify.routing)
      ours.set(server, known)
    }
    return known
  }
  const onRequestStart = (message: unknown): void => {
    const { request, server } = message as { request: IncomingMessage, server: object }
    if (!isOurs(server) || request.url === undefined) return
    request.url = takeAccessToken(request.url).url
  }
  subscribe('http.server.request.start', onRequestStart)

  // Upgrades: Fastify's extra server hands them to fastify.server's 'upgrade' listeners, and so
  // does @fastify/websocket's injectWS. Prepended at onReady, once the WebSocket plugin has put
  // its own listener there: with no listener at all, Node serves an upgrade as a plain request
  // (handled above), and a lone listener of ours would leave it unanswered.
  const onUpgrade = (request: IncomingMessage, _socket: Duplex, _head: Buffer): void => {
    if (request.url !== undefined) {
      const { url, token } = takeAccessToken(request.url)
      request.url = url
      if (token !== undefined) (request as CarriesToken)[kQueryToken] = token
    }
    // The credential entry goes too: ws would otherwise be free to select (echo) it, and a host
    // logging headers would log it.
    const token = takeSubprotocolToken(request)
    if (token !== undefined) (request as CarriesToken)[kSubprotocolToken] = token
  }
  fastify.addHook('onReady', async () => {
    if (fastify.server.listenerCount('upgrade') > 0) fastify.server.prependListener('upgrade', onUpgrade)
  })
  fastify.addHook('onClose', async () => {
    unsubscribe('http.server.request.start', onRequestStart)
    fastify.server.off('upgrade', onUpgrade)
  })
}

export const atlasCredentials = fp(credentialsPlugin, { fastify: '5.x', name: NAME })
export default atlasCredentials
