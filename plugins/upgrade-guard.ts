import fp from 'fastify-plugin'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
import type {} from '@fastify/websocket'
import { NotAWebSocketRouteError } from '../lib/errors.js'
import { sendError } from './send-error.js'

const NAME = 'atlas-upgrade-guard'

/**
 * Only WebSocket routes answer an upgrade. @fastify/websocket hands an upgrade to any other
 * route a socket anyway (101, then a close), after the route's hooks ran as for a GET; this
 * refuses it before any of them with 404, as RFC 6455 §4.2.2 asks for a resource that offers no
 * WebSocket service (the same status an upgrade to an unknown path gets). Covers the routes
 * declared after it: register it before any route.
 */
const upgradeGuardPlugin: FastifyPluginAsync = async (fastify) => {
  fastify.addHook('onRoute', (route) => {
    if (route.websocket === true || route.wsHandler !== undefined) return
    // A route's own hooks run after the instance's, so @fastify/websocket's onRequest has set
    // request.ws by then; first among the route's own, so its authentication never runs.
    const own = route.onRequest === undefined ? [] : Array.isArray(route.onRequest) ? route.onRequest : [route.onRequest]
    route.onRequest = [refuseUpgrade, ...own]
  })
}

// Callback style: on every request of every route, so no promise for the common case.
function refuseUpgrade (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void {
  if (request.ws !== true) return done()
  // Answered here, so `done` is not called: nothing after this hook runs.
  sendError(reply, new NotAWebSocketRouteError(request.method, request.routeOptions.url ?? ''))
}

export const atlasUpgradeGuard = fp(upgradeGuardPlugin, { fastify: '5.x', name: NAME })
export default atlasUpgradeGuard
