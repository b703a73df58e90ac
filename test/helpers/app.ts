import type { FastifyInstance } from 'fastify'
import { buildExampleApp, type ExampleConfig } from '../../examples/app.js'
import { signToken } from '../../examples/jwt-auth.js'
import { TestClient } from './ws-client.js'

export const TEST_SECRET = 'atlas-test-secret-not-for-production'

export interface Instance {
  app: FastifyInstance
  baseUrl: string
  wsUrl: string
  close (): Promise<void>
}

/** Starts the example Atlas API on a free port; closed when the test ends. */
export async function startInstance (
  t: { teardown (fn: () => unknown): void },
  config: Omit<ExampleConfig, 'jwtSecret'> & { jwtSecret?: string }
): Promise<Instance> {
  // No overload protection unless a test asks for it: tests that write thousands of events in
  // this process hold its event loop on purpose, and the next upgrade would be refused with 503.
  return await listenInstance(t, await buildExampleApp({ jwtSecret: TEST_SECRET, ...config, realtime: { overload: false, ...config.realtime } }))
}

/** Listens on a free port with an app the test built itself (e.g. with its own routes); closed when the test ends. */
export async function listenInstance (t: { teardown (fn: () => unknown): void }, app: FastifyInstance): Promise<Instance> {
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('no address')
  let closed = false
  const close = async (): Promise<void> => {
    if (closed) return
    closed = true
    await app.close()
  }
  t.teardown(close)
  return { app, baseUrl: `http://127.0.0.1:${address.port}`, wsUrl: `ws://127.0.0.1:${address.port}/realtime`, close }
}

export async function tokenFor (userId: string, teams: string[], expiresIn?: string): Promise<string> {
  return await signToken(TEST_SECRET, userId, teams, expiresIn)
}

export interface ApiResponse<T = any> { status: number, headers: Headers, body: T }

/** One HTTP call with a bearer token; JSON in, JSON out. */
export async function api<T = any> (baseUrl: string, method: string, path: string, options: { token?: string, body?: unknown, headers?: Record<string, string> } = {}): Promise<ApiResponse<T>> {
  const headers: Record<string, string> = { ...options.headers }
  if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`
  let body: string | undefined
  if (options.body !== undefined) {
    headers['content-type'] ??= 'application/json'
    body = typeof options.body === 'string' ? options.body : JSON.stringify(options.body)
  }
  const response = await fetch(baseUrl + path, { method, headers, body })
  const text = await response.text()
  let parsed: unknown = text
  try { parsed = text === '' ? undefined : JSON.parse(text) } catch { /* keep text */ }
  return { status: response.status, headers: response.headers, body: parsed as T }
}

/** Connects a recording WebSocket client with a token and waits for its subscriptions. */
export async function connectClient (
  t: { teardown (fn: () => unknown): void },
  instance: Pick<Instance, 'wsUrl'>,
  token: string,
  options: { teams?: string[], since?: Record<string, number>, expectTeams?: string[] } = {}
): Promise<TestClient> {
  const params = new URLSearchParams({ access_token: token })
  if (options.teams !== undefined) params.set('teams', options.teams.join(','))
  if (options.since !== undefined) params.set('since', Object.entries(options.since).map(([team, seq]) => `${team}:${seq}`).join(','))
  const client = new TestClient(`${instance.wsUrl}?${params.toString()}`)
  t.teardown(async () => { await client.close() })
  await client.opened()
  const welcome = await client.waitForFrame('welcome')
  await client.ready(options.expectTeams ?? options.teams ?? (welcome.teams as string[]))
  return client
}

/**
 * Waits until `predicate()` holds, re-checking every `everyMs` (for state that emits no event,
 * such as a server-side count or a row in SQLite); fails after `timeoutMs` naming `what`.
 */
export async function waitUntil (what: string, predicate: () => boolean | Promise<boolean>, timeoutMs = 10_000, everyMs = 20): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!await predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, everyMs))
  }
}

export interface SeqReport {
  /** Events received. */
  delivered: number
  /** Receptions of a seq already received before. */
  duplicates: number
  /** Receptions of a seq lower than the one received just before. */
  reorderings: number
  /** Seqs in 1..head never received. */
  missing: number[]
}

/** What a client received of one team's stream, against the team's head seq. */
export function seqReport (seqs: readonly number[], head: number, from = 1): SeqReport {
  const seen = new Set<number>()
  let duplicates = 0
  let reorderings = 0
  seqs.forEach((seq, i) => {
    if (seen.has(seq)) duplicates++
    seen.add(seq)
    if (i > 0 && seq < seqs[i - 1]) reorderings++
  })
  const missing: number[] = []
  for (let seq = from; seq <= head; seq++) if (!seen.has(seq)) missing.push(seq)
  return { delivered: seqs.length, duplicates, reorderings, missing }
}

/** [from, from+1, …, to]: the exact seq list a gapless, ordered, duplicate-free stream holds. */
export function seqRange (from: number, to: number): number[] {
  return Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i)
}
