import fp from 'fastify-plugin'
import type { FastifyPluginAsync } from 'fastify'
import { group, optionsChecker, type OptionsOf } from './options.js'

export const AtlasAccessLogOptionsSchema = group({}, { $id: 'AtlasAccessLogOptions', description: 'Options of atlasAccessLog (none).' })
export type AtlasAccessLogOptions = OptionsOf<typeof AtlasAccessLogOptionsSchema>

const NAME = 'atlas-access-log'
const checkOptions = optionsChecker(NAME, AtlasAccessLogOptionsSchema)

/**
 * One access line per request at info, written when the response is done: method, route pattern,
 * path (never the query: it may carry whatever a client put there), status, duration, and the
 * user when the suite authenticated one. Replaces Fastify's two lines per request ("incoming
 * request", "request completed"): create the instance with
 * `logController: new LogController({ disableRequestLogging: true })`.
 * Requests of routes registered with a `logLevel` above info (health, metrics) are not logged.
 */
const accessLogPlugin: FastifyPluginAsync<AtlasAccessLogOptions> = async (fastify, rawOptions) => {
  checkOptions(rawOptions)
  fastify.addHook('onResponse', async (request, reply) => {
    const url = request.url
    const query = url.indexOf('?')
    request.log.info({
      method: request.method,
      route: request.routeOptions.url,
      path: query === -1 ? url : url.slice(0, query),
      statusCode: reply.statusCode,
      durationMs: Math.round(reply.elapsedTime * 10) / 10,
      userId: request.atlasPrincipal?.userId
    }, 'request')
  })
}

export const atlasAccessLog = fp(accessLogPlugin, { fastify: '5.x', name: NAME, dependencies: ['atlas-auth'] })
export default atlasAccessLog
