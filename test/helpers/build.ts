import { existsSync, readdirSync, statSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
/** Folders under the source folders that hold no TypeScript of the build (pages, Python, results). */
const NOT_BUILT = new Set(['examples/public', 'examples/python-client', 'examples/desktop', 'bench/results'])

/**
 * Why dist/ cannot be what a test runs (a TypeScript source of `folders` missing from the build,
 * or newer than it), or undefined. For tests that spawn the compiled example or bench.
 */
export function buildProblem (folders: readonly string[]): string | undefined {
  const walk = (dir: string): string | undefined => {
    for (const entry of readdirSync(`${ROOT}${dir}`, { withFileTypes: true })) {
      const path = `${dir}/${entry.name}`
      if (entry.isDirectory()) {
        if (NOT_BUILT.has(path)) continue
        const found = walk(path)
        if (found !== undefined) return found
      } else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) {
        const js = `dist/${path.replace(/\.ts$/, '.js')}`
        if (!existsSync(`${ROOT}${js}`)) return `${js} is missing: run npm run build (npm test does it first)`
        if (statSync(`${ROOT}${js}`).mtimeMs < statSync(`${ROOT}${path}`).mtimeMs) return `${js} is older than ${path}: run npm run build`
      }
    }
    return undefined
  }
  for (const folder of folders) {
    const found = walk(folder)
    if (found !== undefined) return found
  }
  return undefined
}
