import { readFileSync } from 'node:fs'
import { spawnSync } from 'node:child_process'

/** Kernel clock ticks per second, the unit of utime/stime in /proc/<pid>/stat. */
const CLOCK_TICKS = (() => {
  const out = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' })
  const n = Number(out.stdout?.trim())
  return Number.isFinite(n) && n > 0 ? n : 100
})()

export interface ProcSample {
  /** User + system CPU time consumed so far, in µs. */
  cpuMicros: number
  /** The kernel's part of cpuMicros (stime): socket writes and loopback TCP land here. */
  systemMicros: number
  /** Resident set size now, in bytes. */
  rssBytes: number
}

/** CPU and RSS of one process, read from /proc; zeros for a process that is gone. */
export function sampleProcess (pid: number): ProcSample {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name (field 2) may hold spaces and parentheses: fields are counted after its ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const userTicks = Number(fields[11]) // utime (field 14)
    const systemTicks = Number(fields[12]) // stime (field 15)
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    const rssKb = Number(/^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1] ?? 0)
    const micros = (ticks: number): number => (ticks / CLOCK_TICKS) * 1e6
    return { cpuMicros: micros(userTicks + systemTicks), systemMicros: micros(systemTicks), rssBytes: rssKb * 1024 }
  } catch {
    return { cpuMicros: 0, systemMicros: 0, rssBytes: 0 }
  }
}

/** Samples of a named group of processes (the two servers of a system, redis, the load generators). */
export type GroupSample = Record<string, ProcSample>

export function sampleGroups (groups: Record<string, readonly number[]>): GroupSample {
  const out: GroupSample = {}
  for (const [name, pids] of Object.entries(groups)) {
    const sum: ProcSample = { cpuMicros: 0, systemMicros: 0, rssBytes: 0 }
    for (const pid of pids) {
      const s = sampleProcess(pid)
      sum.cpuMicros += s.cpuMicros
      sum.systemMicros += s.systemMicros
      sum.rssBytes += s.rssBytes
    }
    out[name] = sum
  }
  return out
}
