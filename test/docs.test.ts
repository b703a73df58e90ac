import t from 'tap'
import { errorCodes } from 'fastify'
import { fileURLToPath } from 'node:url'
import * as errors from '../lib/errors.js'
import { HTTP_ERRORS } from '../protocol/errors.js'
import { fillRegion, generatedFiles } from '../scripts/doc-tables.js'
import { generatedDocuments } from '../scripts/documents.js'

const root = fileURLToPath(new URL('..', import.meta.url))

t.test('the committed docs hold exactly what `npm run docs` writes', async (t) => {
  for (const { file, current, expected } of generatedFiles(root)) {
    t.equal(current, expected, `${file} is current (run npm run docs)`)
  }
})

t.test('the committed API documents (docs/asyncapi.json, docs/openapi.json) are exactly what `npm run docs` writes', async (t) => {
  const documents = await generatedDocuments(root)
  t.same(documents.map(({ file }) => file), ['docs/asyncapi.json', 'docs/openapi.json'])
  for (const { file, current, expected } of documents) {
    t.equal(current, expected, `${file} is current (run npm run docs)`)
  }
})

t.test('a region is replaced between its markers, and missing markers are an error', async (t) => {
  const text = 'a\n<!-- generated:x (npm run docs) -->\nold\n<!-- /generated:x -->\nb\n'
  t.equal(fillRegion(text, 'x', 'new'), 'a\n<!-- generated:x (npm run docs) -->\nnew\n<!-- /generated:x -->\nb\n')
  t.throws(() => fillRegion('no markers', 'x', 'new'), { message: /markers .* not found/ })
})

t.test('the catalogue: every code the suite raises has its error class, with the catalogue\'s status', async (t) => {
  const classes = (Object.values(errors) as unknown[]).filter((value): value is new (...args: never[]) => Error => typeof value === 'function' && value.prototype instanceof Error)
  for (const [code, entry] of Object.entries(HTTP_ERRORS)) {
    if (!('message' in entry)) continue
    const owner = classes.find((c) => (c.prototype as unknown as Record<symbol, unknown>)[Symbol.for(`fastify-error ${code}`)] === true)
    t.ok(owner, `${code} has an error class`)
  }
  const notFound = new errors.TaskNotFoundError('t-1')
  t.match(notFound, { code: 'TASK_NOT_FOUND', statusCode: 404, message: 'Task t-1 not found', name: 'TaskNotFoundError', taskId: 't-1' })
  t.same(errors.errorBody(notFound), { statusCode: 404, code: 'TASK_NOT_FOUND', error: 'Not Found', message: 'Task t-1 not found' })
  t.match(new errors.RateLimitedError(600, 60, 12), { statusCode: 429, message: 'Too many changes: at most 600 per 60 s; retry in 12 s', retryAfterSeconds: 12 })
  const option = new errors.OptionError('atlas-hub', 'option x must be y')
  t.ok(option instanceof TypeError, 'an option error is a TypeError')
  t.match(option, { name: 'TypeError', code: 'ATLAS_ERR_OPTION', message: 'atlas-hub: option x must be y' })
})

t.test('the Fastify codes the catalogue lists are Fastify\'s, with Fastify\'s status', async (t) => {
  const fastifyCodes = errorCodes as unknown as Record<string, (new () => { statusCode?: number }) | undefined>
  for (const [code, entry] of Object.entries(HTTP_ERRORS)) {
    if (!code.startsWith('FST_ERR_')) continue
    const FastifyError = fastifyCodes[code]
    t.ok(FastifyError, `${code} is a Fastify error code`)
    if (FastifyError !== undefined) t.equal(new FastifyError().statusCode, entry.statusCode, `${code} is ${entry.statusCode}`)
  }
})
