import fp from 'fastify-plugin'
import underPressure from '@fastify/under-pressure'
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import type {} from '@fastify/websocket'
import { getHeapStatistics } from 'node:v8'
import { ServerOverloadedError } from '../lib/errors.js'
import { Type } from '@sinclair/typebox'
import { group, integer, optionsChecker, type OptionsOf } from './options.js'
import { sendError } from './send-error.js'

export const AtlasOverloadOptionsSchema = group({
  maxEventLoopDelayMs: Type.Optional(integer({
    allowZero: true,
    default: 1000,
    description: 'Event-loop delay (ms, sampled every `sampleIntervalMs`) past which the instance counts as overloaded. A second is far past healthy (a few ms) and short of what a busy but working process reaches. `0`: not checked.'
  })),
  maxHeapUsedPercent: Type.Optional(integer({
    allowZero: true,
    default: 90,
    description: 'Heap in use, as a percentage of V8\'s heap limit, past which the instance counts as overloaded (near the limit, GC takes most of the CPU and then the process dies). `0`: not checked.'
  })),
  sampleIntervalMs: Type.Optional(integer({ default: 1000, description: 'How often the event-loop delay and the heap are sampled, in ms.' })),
  retryAfterSeconds: Type.Optional(integer({ default: 10, description: 'The `Retry-After` of a refusal, in seconds.' }))
}, { $id: 'AtlasOverloadOptions', description: 'Options of atlasOverload.' })

export type AtlasOverloadOptions = OptionsOf<typeof AtlasOverloadOptionsSchema>

declare module 'fastify' {
  interface FastifyInstance {
    /** Whether the instance is overloaded now (atlasOverload's limits). */
    atlasOverloaded (): boolean
  }
}

const NAME = 'atlas-overload'
const checkOptions = optionsChecker(NAME, AtlasOverloadOptionsSchema)
const READS = new Set(['GET', 'HEAD', 'OPTIONS'])

/**
 * New work, the kind an overloaded instance should turn away: a mutation or a WebSocket upgrade
 * (`request.ws`: registered after @fastify/websocket, whose hook sets it, and whose onResponse
 * then closes the refused upgrade's socket).
 */
function isNewWork (request: FastifyRequest): boolean {
  return !READS.has(request.method) || request.ws
}

/**
 * Overload protection with @fastify/under-pressure: while the event loop lags or the heap is
 * nearly full, new WebSocket upgrades and mutations get `503` `SERVER_OVERLOADED` with
 * `Retry-After`; reads, health checks and the sockets already open go on (their events are
 * what the instance is for, and turning reads away would only make clients retry).
 */
const overloadPlugin: FastifyPluginAsync<AtlasOverloadOptions> = async (fastify, rawOptions) => {
  const options = checkOptions(rawOptions)
  const retryAfter = String(options.retryAfterSeconds)
  const heapLimit = getHeapStatistics().heap_size_limit
  await fastify.register(underPressure, {
    maxEventLoopDelay: options.maxEventLoopDelayMs,
    maxHeapUsedBytes: options.maxHeapUsedPercent === 0 ? 0 : Math.floor(heapLimit * options.maxHeapUsedPercent / 100),
    sampleInterval: options.sampleIntervalMs,
    retryAfter: options.retryAfterSeconds,
    exposeStatusRoute: false,
    // Returning nothing lets the request through; a refusal is sent here, in the suite's format.
    pressureHandler: async (request, reply) => {
      if (!isNewWork(request)) return
      await sendError(reply.header('retry-after', retryAfter), new ServerOverloadedError())
    }
  })
  fastify.decorate('atlasOverloaded', () => fastify.isUnderPressure())
}

export const atlasOverload = fp(overloadPlugin, { fastify: '5.x', name: NAME })
export default atlasOverload
