import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { freePort } from './net.js'

export interface RedisServer {
  url: string
  port: number
  /** SIGKILLs the server (a crash, not a shutdown) and waits for it to be gone. */
  kill (): Promise<void>
  /** Starts it again on the same port. */
  restart (): Promise<void>
  stop (): Promise<void>
}

const HOW_TO_GET_REDIS = 'These tests need redis-server: install it (apt-get install -y redis-server) so each test ' +
  'file can start and kill its own on a free port.'

/** Whether this machine can run the tests that start their own Redis. */
export function hasRedisServer (): boolean {
  return spawnSync('redis-server', ['--version']).status === 0
}

/**
 * Starts a private redis-server on a free loopback port, stopped when the test ends. Tests
 * that must kill and restart Redis cannot share one, so every test file gets its own.
 */
export async function startRedis (t: { teardown (fn: () => unknown): void }): Promise<RedisServer> {
  if (!hasRedisServer()) throw new Error(HOW_TO_GET_REDIS)
  const port = await freePort()
  let child: ChildProcess | undefined

  const launch = async (): Promise<void> => {
    const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'notice', '--logfile', ''], { stdio: ['ignore', 'pipe', 'pipe'] })
    child = proc
    // Ready when it says so on stdout: an event, not a guessed sleep.
    await new Promise<void>((resolve, reject) => {
      let output = ''
      const timer = setTimeout(() => { reject(new Error(`redis-server did not start on ${port}: ${output}`)) }, 10_000)
      const onData = (chunk: Buffer): void => {
        output += chunk.toString()
        if (output.includes('Ready to accept connections')) {
          clearTimeout(timer)
          proc.stdout?.off('data', onData)
          proc.stdout?.resume()
          resolve()
        }
      }
      proc.stdout?.on('data', onData)
      proc.stderr?.on('data', (chunk: Buffer) => { output += chunk.toString() })
      proc.once('exit', (code) => { clearTimeout(timer); reject(new Error(`redis-server exited with ${code}: ${output}`)) })
    })
  }

  const kill = async (): Promise<void> => {
    const proc = child
    if (proc === undefined || proc.exitCode !== null || proc.signalCode !== null) return
    const exited = once(proc, 'exit')
    proc.kill('SIGKILL')
    await exited
  }

  await launch()
  t.teardown(kill)
  return { url: `redis://127.0.0.1:${port}`, port, kill, restart: launch, stop: kill }
}
