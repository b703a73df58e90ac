// The generated API documents are valid (AsyncAPI 3.0 by @asyncapi/parser, OpenAPI 3.1 by an
// OpenAPI validator), say what the contract says, and the example serves them. That they are
// current is test/docs.test.ts's.
import t from 'tap'
import { Parser } from '@asyncapi/parser'
import { Validator } from '@seriousme/openapi-schema-validator'
import { readFileSync } from 'node:fs'
import { buildExampleApp } from '../examples/app.js'
import { CloseCode, ErrorCode, PROTOCOL_VERSION } from '../protocol/constants.js'
import { HTTP_ERRORS, UPGRADE_REFUSAL_ORDER, type HttpErrorCode } from '../protocol/errors.js'
import { clientFrameSchemas, serverFrameSchemas } from '../protocol/schemas.js'
import { TEST_SECRET } from './helpers/app.js'

const read = (name: string): string => readFileSync(new URL(`../docs/${name}`, import.meta.url), 'utf8')

/** Spectral's severity of a diagnostic that makes a document invalid. */
const ERROR = 0

t.test('docs/asyncapi.json is a valid AsyncAPI 3.0 document with every frame both ways', async (t) => {
  const { document, diagnostics } = await new Parser().parse(read('asyncapi.json'))
  t.same(diagnostics.filter((d) => d.severity === ERROR).map((d) => `${d.path.join('.')}: ${d.message}`), [], 'no errors')
  if (document === undefined) return t.fail('not parsed')
  t.equal(document.version(), '3.0.0')
  t.equal(document.info().version(), String(PROTOCOL_VERSION))
  t.same(document.servers().all().map((server) => server.protocol()).sort(), ['ws', 'wss'])
  const channel = document.channels().all()
  t.same(channel.map((c) => c.address()), ['/realtime'])
  const raw = channel[0]?.json() as { bindings: { ws: { query: { properties: object } } } } & Record<string, unknown>
  t.same(Object.keys(raw.bindings.ws.query.properties).sort(), ['access_token', 'since', 'teams'], 'the query parameters of the upgrade')

  // The server receives each client frame and sends each server frame, with that frame's schema.
  const operations = document.operations().all().map((operation) => ({
    action: operation.action(),
    frames: operation.messages().all().map((message) => ({ name: message.name(), type: (message.payload()?.json() as { properties?: { type?: { const?: string } } } | undefined)?.properties?.type?.const }))
  }))
  const framesOf = (action: string): string[] => operations.filter((o) => o.action === action).flatMap((o) => o.frames.map((f) => f.name ?? '')).sort()
  t.same(framesOf('receive'), Object.keys(clientFrameSchemas).sort(), 'the server receives every client frame')
  t.same(framesOf('send'), Object.keys(serverFrameSchemas).sort(), 'the server sends every server frame')
  for (const { frames } of operations) {
    for (const { name, type } of frames) t.equal(type, name, `message ${String(name)} carries the frame whose type it is`)
  }

  t.same((raw['x-close-codes'] as Array<{ code: number }>).map((c) => c.code).filter((code) => code !== 1006).sort(), Object.values(CloseCode).sort(), 'every close code')
  t.same((raw['x-upgrade-refusals'] as Array<{ code: string }>).map((r) => r.code), UPGRADE_REFUSAL_ORDER, 'the upgrade\'s refusals, in order')
  const errorMessage = document.messages().all().find((message) => message.name() === 'error')
  t.same((errorMessage?.json()['x-error-codes'] as Array<{ code: string }>).map((c) => c.code).sort(), Object.values(ErrorCode).sort(), 'every error frame code')
})

t.test('docs/asyncapi.json: the parser finds an error the document does not have', async (t) => {
  // So the test above cannot pass by a parser that accepts anything.
  const broken = JSON.parse(read('asyncapi.json')) as { operations: Record<string, { action: string }> }
  const [first] = Object.values(broken.operations)
  if (first !== undefined) first.action = 'publish'
  const { diagnostics } = await new Parser().parse(JSON.stringify(broken))
  t.ok(diagnostics.some((d) => d.severity === ERROR), 'an operation action of AsyncAPI 2 is refused')
})

interface Operation {
  security?: unknown
  parameters?: Array<{ name: string, in: string }>
  responses: Record<string, { content?: { 'application/json'?: { schema?: { allOf?: Array<{ properties?: { code?: { enum?: string[] } } }> } } } }>
}

t.test('docs/openapi.json is a valid OpenAPI 3.1 document of the task routes', async (t) => {
  const text = read('openapi.json')
  const validator = new Validator()
  const result = await validator.validate(JSON.parse(text) as Parameters<Validator['validate']>[0])
  t.same(result.errors ?? [], [], 'no errors')
  t.ok(result.valid)
  t.equal(validator.version, '3.1')

  const document = JSON.parse(text) as { info: { version: string }, security: unknown, components: { securitySchemes: Record<string, { type: string, scheme: string }> }, paths: Record<string, Record<string, Operation>> }
  t.equal(document.info.version, String(PROTOCOL_VERSION))
  t.match(Object.values(document.components.securitySchemes), [{ type: 'http', scheme: 'bearer' }], 'a bearer scheme')
  t.same(document.security, [{ bearerAuth: [] }], 'required on every route')
  t.same(Object.keys(document.paths).sort(), ['/teams/{teamId}/tasks', '/teams/{teamId}/tasks/{taskId}'], 'the task routes, not the WebSocket')
  const patch = document.paths['/teams/{teamId}/tasks/{taskId}']?.patch
  t.same(patch?.parameters?.filter((p) => p.in === 'header').map((p) => p.name).sort(), ['idempotency-key', 'if-match'], 'PATCH takes Idempotency-Key and If-Match')

  // Each error answer lists the catalogue's codes of its status; each route those it answers.
  const codesOf = (operation: Operation | undefined): HttpErrorCode[] => Object.entries(operation?.responses ?? {}).flatMap(([status, response]) => {
    const codes = (response.content?.['application/json']?.schema?.allOf?.[1]?.properties?.code?.enum ?? []) as HttpErrorCode[]
    const misplaced = codes.filter((code) => HTTP_ERRORS[code].statusCode !== Number(status))
    t.same(misplaced, [], `the codes under ${status} are the catalogue's ${status}s`)
    return codes
  })
  const patchCodes = codesOf(patch)
  for (const code of ['PRECONDITION_FAILED', 'TASK_NOT_FOUND', 'MUTATION_ID_CONFLICT', 'RATE_LIMITED', 'UNAUTHORIZED', 'FORBIDDEN_TEAM', 'INTERNAL', 'FST_ERR_CTP_BODY_TOO_LARGE']) {
    t.ok(patchCodes.includes(code as HttpErrorCode), `PATCH documents ${code}`)
  }
  const listCodes = codesOf(document.paths['/teams/{teamId}/tasks']?.get)
  t.ok(listCodes.includes('INVALID_CURSOR'), 'the list documents INVALID_CURSOR')
  t.notOk(listCodes.includes('PRECONDITION_FAILED'), 'and not what it cannot answer')

  // So the validation above cannot pass by a validator that accepts anything.
  const broken = JSON.parse(text) as { paths: Record<string, Record<string, { responses: Record<string, { description?: string }> }>> }
  delete broken.paths['/teams/{teamId}/tasks']?.get?.responses['200']?.description
  t.equal((await new Validator().validate(broken as Parameters<Validator['validate']>[0])).valid, false, 'a response without a description is refused')
})

t.test('the example serves both documents', async (t) => {
  const app = await buildExampleApp({ jwtSecret: TEST_SECRET, databasePath: `${t.testdir()}/atlas.db` })
  t.teardown(async () => { await app.close() })
  for (const name of ['asyncapi.json', 'openapi.json']) {
    const response = await app.inject({ method: 'GET', url: `/docs/${name}` })
    t.equal(response.statusCode, 200, name)
    t.match(response.headers['content-type'], /^application\/json/)
    t.equal(response.body, read(name), `${name} as committed`)
  }
})
