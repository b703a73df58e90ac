import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { ChildConfig } from '../fixtures/child-instance.js'
import { TEST_SECRET } from './app.js'

export interface ChildInstance {
  pid: number
  baseUrl: string
  wsUrl: string
  process: ChildProcess
  /** Resolves when the process is gone, with how it ended. */
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  /** Everything the child wrote to stderr (for failure messages). */
  stderr (): string
  /** SIGTERM (graceful close) and wait for the exit. */
  stop (): Promise<void>
}

const FIXTURE = fileURLToPath(new URL('../fixtures/child-instance.ts', import.meta.url))
// tap's own TypeScript loader (ts-node, transpile only), so the child runs the same sources as the tests.
const TS_LOADER = new URL('../../node_modules/@tapjs/typescript/dist/esm/import.mjs', import.meta.url).href

/** How the child process is started: its working directory, and a command it runs under (e.g. `ip netns exec <name>`). */
export interface ChildLaunch {
  cwd?: string
  prefix?: readonly string[]
}

/**
 * Starts the example Atlas API in a child process (node + tap's TypeScript loader) and waits
 * until it listens. The child is SIGKILLed when the test ends if it is still running.
 */
export async function startChildInstance (
  t: { teardown (fn: () => unknown): void },
  config: Omit<ChildConfig, 'jwtSecret'> & { jwtSecret?: string },
  timeoutMs = 30_000,
  launch: ChildLaunch = {}
): Promise<ChildInstance> {
  // A prefix must exec node in its place (as `ip netns exec` does): the pid is then the instance's own.
  const [command, ...args] = [...launch.prefix ?? [], process.execPath, '--import', TS_LOADER, FIXTURE]
  const child = spawn(command, args, {
    cwd: launch.cwd,
    env: { ...process.env, TS_NODE_TRANSPILE_ONLY: '1', ATLAS_CHILD_CONFIG: JSON.stringify({ jwtSecret: TEST_SECRET, ...config }) },
    stdio: ['pipe', 'pipe', 'pipe']
  })
  let stderr = ''
  child.stderr?.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => { resolve({ code, signal }) })
  })
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await exited
    }
  })
  const port = await new Promise<number>((resolve, reject) => {
    let stdout = ''
    const timer = setTimeout(() => { reject(new Error(`child instance did not start in ${timeoutMs} ms: ${stderr}`)) }, timeoutMs)
    const onData = (chunk: Buffer): void => {
      stdout += chunk.toString()
      const line = stdout.split('\n').find((l) => l.startsWith('{'))
      if (line === undefined) return
      clearTimeout(timer)
      child.stdout?.off('data', onData)
      child.stdout?.resume()
      resolve((JSON.parse(line) as { port: number }).port)
    }
    child.stdout?.on('data', onData)
    exited.then(({ code, signal }) => {
      clearTimeout(timer)
      reject(new Error(`child instance exited (${code ?? signal}) before listening: ${stderr}`))
    }, () => {})
  })
  const host = config.host ?? '127.0.0.1'
  return {
    pid: child.pid ?? -1,
    baseUrl: `http://${host}:${port}`,
    wsUrl: `ws://${host}:${port}/realtime`,
    process: child,
    exited,
    stderr: () => stderr,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGTERM')
      await exited
    }
  }
}
