import fastifyStatic from '@fastify/static'
import type { FastifyPluginAsync, FastifyReply } from 'fastify'
import { Type } from '@sinclair/typebox'
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname } from 'node:path'
import { group, optionsChecker, string, type OptionsOf } from './options.js'

export const AtlasClientAssetsOptionsSchema = group({
  prefix: Type.Optional(string({
    pattern: /^\/.*[^/]$/,
    defaultText: 'none',
    description: 'Fastify\'s own register option: where the files go. `\'/atlas-sdk\'` serves `/atlas-sdk/client/index.js` and `/atlas-sdk/protocol/constants.js`.'
  })),
  cacheControl: Type.Optional(string({
    default: 'no-cache',
    description: '`Cache-Control` of every file served. The default has browsers revalidate (ETag, Last-Modified) on each load, so an upgraded SDK is picked up at once: the URLs carry no version, and a long `max-age` would keep an old SDK in caches.'
  }))
}, { $id: 'AtlasClientAssetsOptions', description: 'Options of atlasClientAssets.' })

export type AtlasClientAssetsOptions = OptionsOf<typeof AtlasClientAssetsOptionsSchema>

const NAME = 'atlas-client-assets'
const checkOptions = optionsChecker(NAME, AtlasClientAssetsOptionsSchema)

/**
 * The compiled SDK, found where Node finds the installed atlas-realtime-client package (in this
 * repository, the client/ workspace npm links), never relative to the working directory.
 */
function sdkDist (): string {
  const require = createRequire(import.meta.url)
  return `${dirname(require.resolve('atlas-realtime-client/package.json'))}/dist`
}

/**
 * Serves the client SDK to pages, as the browser loads it: the SDK's ES modules at
 * `<prefix>/client/<file>.js` and the one protocol file they import, `<prefix>/protocol/constants.js`,
 * at paths that keep their relative `../protocol/constants.js` import working. Nothing else: no
 * declarations, no TypeBox schemas, nothing outside those folders.
 *
 *   await app.register(atlasClientAssets, { prefix: '/atlas-sdk' })
 *   // <script type="module"> import { AtlasClient } from '/atlas-sdk/client/index.js'
 *
 * Not wrapped in fastify-plugin on purpose: it must be encapsulated for Fastify to apply the
 * prefix, and its @fastify/static instances stay inside (`reply.sendFile` of the app untouched).
 */
export const atlasClientAssets: FastifyPluginAsync<AtlasClientAssetsOptions> = async (fastify, rawOptions) => {
  const { cacheControl } = checkOptions(rawOptions)
  const dist = sdkDist()
  const headers = {
    cacheControl: false,
    setHeaders (reply: FastifyReply, path: string): void {
      reply.header('cache-control', cacheControl)
      // The type RFC 9239 names (@fastify/send still says application/javascript).
      if (path.endsWith('.js')) reply.type('text/javascript; charset=utf-8')
    }
  }
  // An installed package always has its dist/. In this repository's client/ workspace it exists
  // only after a build: checked per request until found, so a build made after start-up is served.
  let built = false
  fastify.addHook('onRequest', async (_request, reply) => {
    if (built) return
    built = existsSync(`${dist}/client/index.js`)
    if (!built) {
      return await reply.code(503).type('text/plain; charset=utf-8').send(`The client SDK is not built: run \`npm run build\` (${dist}/client is missing)`)
    }
  })
  await fastify.register(fastifyStatic, {
    root: `${dist}/client`,
    prefix: '/client/',
    decorateReply: false,
    // Flat names of compiled modules (and their maps) only: no declarations, nothing outside the folder.
    allowedPath: (path) => /^\/[a-z][a-z0-9-]*\.js(\.map)?$/.test(path),
    ...headers
  })
  await fastify.register(fastifyStatic, {
    root: `${dist}/protocol`,
    prefix: '/protocol/',
    decorateReply: false,
    // The SDK imports only the dependency-free constants; schemas.js needs TypeBox.
    allowedPath: (path) => /^\/constants\.js(\.map)?$/.test(path),
    ...headers
  })
}
