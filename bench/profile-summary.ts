/**
 * Summarises V8 CPU profiles (`node --cpu-prof`, written by `npm run bench -- --profile`):
 * where the time went, by function (self and inclusive) and by package, over all the given
 * files together. Usage: node dist/bench/profile-summary.js [file.cpuprofile | directory]... [--top N]
 * (default: bench/results/profiles/atlas).
 */
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { RESULTS_DIR } from './report.js'

interface ProfileNode {
  id: number
  callFrame: { functionName: string, url: string, lineNumber: number }
  children?: number[]
}
interface CpuProfile { nodes: ProfileNode[], samples: number[], timeDeltas: number[] }

/** A readable, stable name for a frame: function and where it lives. */
function frameKey (frame: ProfileNode['callFrame']): string {
  const name = frame.functionName === '' ? '(anonymous)' : frame.functionName
  if (frame.url === '') return name
  return `${name} ${shortUrl(frame.url)}:${frame.lineNumber + 1}`
}

function shortUrl (url: string): string {
  const i = url.lastIndexOf('node_modules/')
  if (i >= 0) return url.slice(i + 'node_modules/'.length)
  const dist = url.lastIndexOf('/dist/')
  if (dist >= 0) return url.slice(dist + '/dist/'.length)
  return url.replace(/^file:\/\//, '')
}

/** Package (or area) a frame belongs to: a node_modules package, node internals, our own lib/plugins, or V8. */
function areaOf (frame: ProfileNode['callFrame']): string {
  const { url, functionName } = frame
  if (url === '') return functionName.startsWith('(') ? functionName : '(native)'
  if (url.startsWith('node:')) return 'node internals'
  const i = url.lastIndexOf('node_modules/')
  if (i >= 0) {
    const rest = url.slice(i + 'node_modules/'.length).split('/')
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]
  }
  const dist = url.lastIndexOf('/dist/')
  if (dist >= 0) return url.slice(dist + '/dist/'.length).split('/')[0] + '/'
  return url
}

interface Totals { self: Map<string, number>, inclusive: Map<string, number>, areas: Map<string, number>, totalMicros: number }

function add (map: Map<string, number>, key: string, v: number): void {
  map.set(key, (map.get(key) ?? 0) + v)
}

function accumulate (profile: CpuProfile, totals: Totals): void {
  const byId = new Map<number, ProfileNode>()
  const parent = new Map<number, number>()
  for (const node of profile.nodes) {
    byId.set(node.id, node)
    for (const child of node.children ?? []) parent.set(child, node.id)
  }
  const { samples, timeDeltas } = profile
  for (let i = 0; i < samples.length; i++) {
    // The time until the next sample belongs to this one.
    const micros = timeDeltas[i + 1] ?? 0
    const node = byId.get(samples[i])
    if (node === undefined) continue
    totals.totalMicros += micros
    add(totals.self, frameKey(node.callFrame), micros)
    add(totals.areas, areaOf(node.callFrame), micros)
    const seen = new Set<string>()
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const key = frameKey((byId.get(id) as ProfileNode).callFrame)
      if (!seen.has(key)) { seen.add(key); add(totals.inclusive, key, micros) }
    }
  }
}

function table (title: string, map: Map<string, number>, total: number, top: number): string {
  const rows = [...map].sort((a, b) => b[1] - a[1]).slice(0, top)
  return [`\n${title}`, ...rows.map(([k, v]) => `  ${((v / total) * 100).toFixed(1).padStart(5)}%  ${(v / 1000).toFixed(0).padStart(7)} ms  ${k}`)].join('\n')
}

function main (): void {
  const args = process.argv.slice(2)
  const topAt = args.indexOf('--top')
  const top = topAt >= 0 ? Number(args.splice(topAt, 2)[1]) : 30
  const paths = args.length === 0 ? [`${RESULTS_DIR}profiles/atlas`] : args
  const files = paths.flatMap((p) => statSync(p).isDirectory()
    ? readdirSync(p).filter((f) => f.endsWith('.cpuprofile')).map((f) => join(p, f))
    : [p])
  const totals: Totals = { self: new Map(), inclusive: new Map(), areas: new Map(), totalMicros: 0 }
  for (const file of files) accumulate(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile, totals)
  const busy = totals.totalMicros - (totals.self.get('(idle)') ?? 0)
  console.log(`${files.length} profile(s), ${(totals.totalMicros / 1e6).toFixed(1)} s sampled, ${(busy / 1e6).toFixed(1)} s not idle; percentages are of the non-idle time`)
  totals.self.delete('(idle)')
  totals.inclusive.delete('(idle)')
  totals.areas.delete('(idle)')
  console.log(table('Self time by package/area', totals.areas, busy, top))
  console.log(table('Self time by function', totals.self, busy, top))
  console.log(table('Inclusive time by function', totals.inclusive, busy, top))
}

main()
