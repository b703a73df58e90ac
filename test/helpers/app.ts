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
  const app = await buildExampleApp({ jwtSecret: TEST_SECRET, ...config })
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

export async function tokenFor (userId: string, teams: string[]): Promise<string> {
  return await signToken(TEST_SECRET, userId, teams)
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
