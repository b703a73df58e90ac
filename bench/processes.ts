import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { once } from 'node:events'
import { request } from 'node:http'
import { createServer } from 'node:net'

/**
 * Every child the bench starts is registered here, so that a normal end, an error or Ctrl-C
 * all stop the same set: no redis-server or server process outlives the bench.
 */
const children = new Set<ChildProcess>()

export function track<T extends ChildProcess> (child: T): T {
  children.add(child)
  child.once('exit', () => { children.delete(child) })
  return child
}

export function spawnTracked (command: string, args: readonly string[], options: SpawnOptions): ChildProcess {
  return track(spawn(command, args, options))
}

/** Stops one child: SIGTERM, then SIGKILL when it has not exited after `graceMs`. */
export async function stopChild (child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  child.kill('SIGTERM')
  const timer = setTimeout(() => { child.kill('SIGKILL') }, graceMs)
  await exited
  clearTimeout(timer)
}

export async function stopAll (): Promise<void> {
  await Promise.all([...children].map(async (child) => { await stopChild(child, 3000) }))
}

/** Last-resort cleanup when the orchestrator itself is dying: synchronous, no waiting. */
export function killAllNow (): void {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
}

/** A TCP port that was free on 127.0.0.1 a moment ago. */
export async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  const address = server.address()
  await new Promise((resolve) => server.close(resolve))
  if (address === null || typeof address === 'string') throw new Error('bench: no free port')
  return address.port
}

/** Resolves when `GET http://127.0.0.1:port/path` answers 200; fails after `timeoutMs` or if `child` exits. */
export async function waitForHttp (port: number, path: string, child: ChildProcess, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (let attempt = 0; Date.now() < deadline; attempt++) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`bench: server on port ${port} exited (${child.exitCode ?? child.signalCode}) before it was ready`)
    if (await httpOk(port, path)) return
    await sleep(Math.min(50 * (attempt + 1), 250))
  }
  throw new Error(`bench: server on port ${port} not ready after ${timeoutMs} ms`)
}

async function httpOk (port: number, path: string): Promise<boolean> {
  return await new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, timeout: 1000 }, (res) => {
      res.resume()
      resolve(res.statusCode === 200)
    })
    req.once('error', () => { resolve(false) })
    req.once('timeout', () => { req.destroy(); resolve(false) })
    req.end()
  })
}

export async function sleep (ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms))
}

export interface RedisProcess {
  url: string
  pid: number
  stop (): Promise<void>
}

/** A private redis-server on a free loopback port, no persistence; ready when it says so. */
export async function startRedis (): Promise<RedisProcess> {
  const port = await freePort()
  const child = spawnTracked('redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--logfile', ''
  ], { stdio: ['ignore', 'pipe', 'pipe'] })
  await new Promise<void>((resolve, reject) => {
    let output = ''
    const timer = setTimeout(() => { reject(new Error(`bench: redis-server did not start: ${output}`)) }, 10_000)
    const onData = (chunk: Buffer): void => {
      output += chunk.toString()
      if (!output.includes('Ready to accept connections')) return
      clearTimeout(timer)
      child.stdout?.off('data', onData)
      child.stdout?.resume()
      resolve()
    }
    child.stdout?.on('data', onData)
    child.stderr?.on('data', (chunk: Buffer) => { output += chunk.toString() })
    child.once('error', (err) => { clearTimeout(timer); reject(new Error(`bench: cannot run redis-server: ${err.message}`)) })
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`bench: redis-server exited with ${code}: ${output}`)) })
  })
  return { url: `redis://127.0.0.1:${port}`, pid: child.pid ?? 0, stop: async () => { await stopChild(child) } }
}
