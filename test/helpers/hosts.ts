import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { once } from 'node:events'
import { createConnection, createServer, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ChildConfig } from '../fixtures/child-instance.js'
import { testDatabase } from './backends.js'
import { startChildInstance, type ChildInstance } from './child-instance.js'
import { startRedis, type RedisServer } from './redis.js'

// Hosts that share nothing but PostgreSQL and Redis: each instance of the example is a process
// of its own, in a temporary working directory of its own. With the `namespaces` topology each
// also has a network namespace of its own (a veth pair to this one, a /30 of its own), and
// reaches PostgreSQL and Redis only through a forwarder listening on its pair's host side: its
// own loopback has neither.

export type Topology = 'loopback' | 'namespaces'

/** A network namespace joined to this one by a veth pair. */
export interface HostNetwork {
  name: string
  /** This side of the pair: where the namespace reaches the shared services. */
  hostAddress: string
  /** The namespace's side: where its instance listens. */
  address: string
  /** Runs a command inside the namespace (it execs the command: the pid is the command's). */
  exec: readonly string[]
  /** Remote addresses of the connections its forwarders accepted. */
  peers: Set<string>
}

export interface Host extends ChildInstance {
  workdir: string
  network: HostNetwork | undefined
}

export interface Hosts {
  hosts: Host[]
  redis: RedisServer
  /** The shared database, as this process reaches it. */
  databaseUrl: string
}

const NAMESPACE_PREFIX = 'atlas-host-'

function ip (...args: string[]): void {
  const run = spawnSync('ip', args, { encoding: 'utf8' })
  if (run.status !== 0) throw new Error(`ip ${args.join(' ')}: ${run.error?.message ?? run.stderr.trim()}`)
}

/** Why this machine cannot give each instance a network namespace, or undefined when it can. */
export function namespacesUnavailable (): string | undefined {
  const probe = `${NAMESPACE_PREFIX}probe-${process.pid}`
  try {
    ip('netns', 'add', probe)
    try {
      ip('netns', 'exec', probe, 'ip', 'link', 'set', 'lo', 'up')
    } finally {
      ip('netns', 'del', probe)
    }
    return undefined
  } catch (err) {
    return (err as Error).message
  }
}

let staleRemoved = false

/** Namespaces left by a run that was killed before its teardown (their pid is gone): their addresses would clash. */
function removeStaleNamespaces (): void {
  if (staleRemoved) return
  staleRemoved = true
  const listed = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout ?? ''
  for (const name of listed.split('\n').map((line) => line.split(' ')[0])) {
    const pid = Number(new RegExp(`^${NAMESPACE_PREFIX}(\\d+)-\\d+$`).exec(name)?.[1])
    if (!Number.isInteger(pid) || pid === process.pid) continue
    try { process.kill(pid, 0); continue } catch {}
    spawnSync('ip', ['link', 'del', vethName(pid, Number(name.split('-').at(-1)))])
    spawnSync('ip', ['netns', 'del', name])
  }
}

/** Interface names have at most 15 characters. */
function vethName (pid: number, index: number): string {
  return `ah${pid}x${index}`
}

/**
 * A network namespace for host `index` of this test process, removed when the test ends. Its
 * /30 is taken from the pid, so concurrent test processes do not share addresses.
 */
export async function isolatedNetwork (t: { teardown (fn: () => unknown): void }, index: number): Promise<HostNetwork> {
  if (index < 0 || index > 63) throw new RangeError('host index out of 0..63')
  removeStaleNamespaces()
  const name = `${NAMESPACE_PREFIX}${process.pid}-${index}`
  const outside = vethName(process.pid, index)
  const inside = `${outside}n`
  const subnet = `10.${(process.pid >> 8) & 255}.${process.pid & 255}`
  const hostAddress = `${subnet}.${index * 4 + 1}`
  const address = `${subnet}.${index * 4 + 2}`
  const exec = ['ip', 'netns', 'exec', name]
  ip('netns', 'add', name)
  // Deleting the pair's end here destroys both at once (a namespace's own links go only later).
  t.teardown(() => {
    spawnSync('ip', ['link', 'del', outside])
    spawnSync('ip', ['netns', 'del', name])
  })
  ip('link', 'add', outside, 'type', 'veth', 'peer', 'name', inside)
  ip('link', 'set', inside, 'netns', name)
  ip('addr', 'add', `${hostAddress}/30`, 'dev', outside)
  ip('link', 'set', outside, 'up')
  ip('-n', name, 'addr', 'add', `${address}/30`, 'dev', inside)
  ip('-n', name, 'link', 'set', inside, 'up')
  ip('-n', name, 'link', 'set', 'lo', 'up')
  return { name, hostAddress, address, exec, peers: new Set() }
}

/**
 * Listens on the namespace's host side and forwards each connection to 127.0.0.1:`port` (where
 * PostgreSQL and Redis listen): the namespace reaches them only over its veth pair. Resolves to
 * the port it listens on; closed when the test ends.
 */
async function forwarder (t: { teardown (fn: () => unknown): void }, network: HostNetwork, port: number): Promise<number> {
  const sockets = new Set<Socket>()
  const server = createServer((client) => {
    network.peers.add(client.remoteAddress ?? '?')
    const upstream = createConnection({ host: '127.0.0.1', port })
    sockets.add(client).add(upstream)
    const destroy = (): void => { client.destroy(); upstream.destroy(); sockets.delete(client); sockets.delete(upstream) }
    client.pipe(upstream).pipe(client)
    client.once('close', destroy).on('error', destroy)
    upstream.once('close', destroy).on('error', destroy)
  })
  server.listen(0, network.hostAddress)
  await once(server, 'listening')
  t.teardown(async () => {
    for (const socket of sockets) socket.destroy()
    await new Promise((resolve) => server.close(resolve))
  })
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('forwarder: no address')
  return address.port
}

/** `url` with its host and port replaced by the forwarder's. */
async function throughForwarder (t: { teardown (fn: () => unknown): void }, network: HostNetwork, url: string): Promise<string> {
  const parsed = new URL(url)
  parsed.port = String(await forwarder(t, network, Number(parsed.port)))
  parsed.hostname = network.hostAddress
  return parsed.href
}

export type HostConfig = Omit<ChildConfig, 'jwtSecret' | 'databasePath' | 'databaseUrl' | 'redisUrl' | 'host'>

/**
 * One PostgreSQL database (of this test), one redis-server, and one instance per entry of
 * `configs`, each a process in a temporary working directory of its own (and with
 * `namespaces`, a network namespace of its own).
 */
export async function startHosts (t: { teardown (fn: () => unknown): void, testdir (): string, name: string }, topology: Topology, configs: HostConfig[]): Promise<Hosts> {
  const redis = await startRedis(t)
  const { databaseUrl } = await testDatabase(t, 'postgresql')
  if (databaseUrl === undefined) throw new Error('no PostgreSQL database')
  // Together: each takes seconds to load its sources.
  const hosts = await Promise.all(configs.map(async (config, index) => await startHost(t, { databaseUrl, redisUrl: redis.url }, topology, index, config)))
  return { hosts, redis, databaseUrl }
}

/** Starts host `index` (its namespace's number) on the shared services. */
export async function startHost (t: { teardown (fn: () => unknown): void }, services: { databaseUrl: string, redisUrl: string }, topology: Topology, index: number, config: HostConfig): Promise<Host> {
  const workdir = mkdtempSync(join(tmpdir(), `atlas-host-${index}-`))
  t.teardown(() => { rmSync(workdir, { recursive: true, force: true }) })
  const network = topology === 'namespaces' ? await isolatedNetwork(t, index) : undefined
  const reach = network === undefined
    ? services
    : { databaseUrl: await throughForwarder(t, network, services.databaseUrl), redisUrl: await throughForwarder(t, network, services.redisUrl) }
  // Generous: a process loading the sources takes seconds, longer with several at once on a busy machine.
  const child = await startChildInstance(t, { ...config, ...reach, host: network?.address }, 90_000, { cwd: workdir, prefix: network?.exec })
  return Object.assign(child, { workdir, network })
}
