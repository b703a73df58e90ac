import fp from 'fastify-plugin'
import type { FastifyPluginAsync } from 'fastify'
import { Type } from '@sinclair/typebox'
import { group, integer, optionsChecker, string, type OptionsOf } from './options.js'

export const AtlasHealthOptionsSchema = group({
  livePath: Type.Optional(string({ pattern: /^\//, default: '/health/live', description: 'Liveness route: `200` `{ "live": true }` while the process answers at all (restart it when this fails).' })),
  readyPath: Type.Optional(string({
    pattern: /^\//,
    default: '/health/ready',
    description: 'Readiness route: `200` when the instance should get new sockets and requests, else `503` with `Retry-After`, while the database is not writable, the broker is down, the instance is draining (`atlasDrain()`) or overloaded (with `overload`). The body says which: `{ "ready", "checks": { "database", "broker", "draining", "overloaded" } }`. Point the load balancer\'s health check here.'
  })),
  retryAfterSeconds: Type.Optional(integer({ default: 5, description: 'The `Retry-After` of a not-ready answer, in seconds.' }))
}, { $id: 'AtlasHealthOptions', description: 'Options of atlasHealth.' })

export type AtlasHealthOptions = OptionsOf<typeof AtlasHealthOptionsSchema>

export interface Readiness {
  ready: boolean
  checks: { database: boolean, broker: boolean, draining: boolean, overloaded: boolean }
}

declare module 'fastify' {
  interface FastifyInstance {
    /** What the readiness route answers, checked now. */
    atlasReadiness (): Promise<Readiness>
    /**
     * Marks the instance as draining: readiness answers `503` from now on, so the load balancer
     * stops sending new sockets here, while everything open is served. Call it on SIGTERM, wait
     * a health-check interval or two, then `close()` (clients get 1001 and resume elsewhere).
     */
    atlasDrain (): void
  }
}

const NAME = 'atlas-health'
const checkOptions = optionsChecker(NAME, AtlasHealthOptionsSchema)

/** Liveness and readiness routes for a load balancer or an orchestrator. */
const healthPlugin: FastifyPluginAsync<AtlasHealthOptions> = async (fastify, rawOptions) => {
  const { livePath, readyPath, retryAfterSeconds } = checkOptions(rawOptions)
  const repository = fastify.taskRepository
  const broker = fastify.atlasBroker
  let draining = false
  // Closing (Fastify's preClose, before the sockets get 1001): not ready either.
  fastify.addHook('preClose', async () => { draining = true })

  const readiness = async (): Promise<Readiness> => {
    const checks = {
      database: await repository.writable(),
      broker: broker.connected,
      draining,
      overloaded: fastify.hasDecorator('atlasOverloaded') ? fastify.atlasOverloaded() : false
    }
    return { ready: checks.database && checks.broker && !checks.draining && !checks.overloaded, checks }
  }
  fastify.decorate('atlasReadiness', readiness)
  fastify.decorate('atlasDrain', () => { draining = true })

  // Probed every few seconds by every balancer: logged only when something is wrong.
  fastify.get(livePath, { logLevel: 'warn' }, async () => ({ live: true }))
  fastify.get(readyPath, { logLevel: 'warn' }, async (_request, reply) => {
    const state = await readiness()
    reply.header('cache-control', 'no-store')
    if (!state.ready) reply.code(503).header('retry-after', String(retryAfterSeconds))
    return state
  })
}

export const atlasHealth = fp(healthPlugin, { fastify: '5.x', name: NAME, dependencies: ['atlas-repository', 'atlas-broker'] })
export default atlasHealth
