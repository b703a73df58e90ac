import { execFile } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import t from 'tap'

// The SDK's published declarations, as `npm run build` (pretest) emits them into the
// atlas-realtime-client package (client/dist): a consumer of atlas-realtime-client, or of its
// re-export atlas-realtime/client, must not need the server's packages or Node's types to compile.
const root = fileURLToPath(new URL('../', import.meta.url))
const SDK_DIR = resolve(root, 'client/dist/client')

/** Module specifiers a declaration file names: imports, re-exports, import types, references. */
function specifiersOf (source: string): string[] {
  const found: string[] = []
  for (const pattern of [/\bfrom\s*['"]([^'"]+)['"]/g, /\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g, /^\s*import\s*['"]([^'"]+)['"]/gm]) {
    for (const [, specifier] of source.matchAll(pattern)) found.push(specifier)
  }
  for (const [, kind, name] of source.matchAll(/\/\/\/\s*<reference\s+(types|path|lib)\s*=\s*['"]([^'"]+)['"]/g)) found.push(`${kind}:${name}`)
  return found
}

function withoutComments (source: string): string {
  return source.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/(?!\/\s*<reference).*$/gm, '')
}

t.test('the SDK\'s declarations reach only the SDK, the protocol and TypeBox', async (t) => {
  t.ok(existsSync(`${SDK_DIR}/index.d.ts`), 'client/dist/client/index.d.ts exists (npm test builds first)')
  const queue = readdirSync(SDK_DIR).filter((f) => f.endsWith('.d.ts')).map((f) => `${SDK_DIR}/${f}`)
  const seen = new Set<string>()
  const outside: string[] = []
  while (queue.length > 0) {
    const file = queue.shift() as string
    if (seen.has(file)) continue
    seen.add(file)
    const source = readFileSync(file, 'utf8')
    const name = relative(root, file)
    for (const specifier of specifiersOf(source)) {
      if (specifier.startsWith('./') || specifier.startsWith('../')) {
        queue.push(resolve(dirname(file), specifier.replace(/\.js$/, '.d.ts')))
      } else if (specifier !== '@sinclair/typebox') {
        outside.push(`${name} -> ${specifier}`)
      }
    }
    const code = withoutComments(source)
    for (const word of ['drizzle', 'fastify', 'better-sqlite3', 'ioredis', 'NodeJS', 'Buffer']) {
      if (code.includes(word)) outside.push(`${name} mentions ${word}`)
    }
  }
  const reached = [...seen].map((file) => relative(root, file)).sort()
  t.same([...new Set(outside)], [], 'no declaration names a package other than TypeBox, nor Node or server types')
  t.same(reached.filter((file) => !/^client\/dist\/(client|protocol)\//.test(file)), [], 'only the SDK package\'s dist/client and dist/protocol are reached')
  t.ok(reached.includes('client/dist/protocol/schemas.d.ts') && reached.includes('client/dist/protocol/constants.d.ts'), 'the wire types come from its dist/protocol')
})

t.test('a consumer compiles against atlas-realtime/client with DOM only: no Node types, libraries checked', async (t) => {
  // Inside the package, so `atlas-realtime/client` resolves through the package's own
  // `exports` (a self-reference), exactly as an installed copy would.
  const dir = t.testdir({
    'consumer.ts': [
      "import { AtlasClient, CloseCode, TaskStore, type ServerFrame, type Task, type TaskEvent } from 'atlas-realtime/client'",
      '',
      "const client = new AtlasClient({ baseUrl: 'https://atlas.example', getToken: async () => 'token', teams: ['red'], WebSocket })",
      "client.on('event', (event: TaskEvent) => { const seq: number = event.seq; void seq })",
      "const store = new TaskStore(client, 'red')",
      "store.on('change', (tasks: Task[]) => { const status: 'todo' | 'in_progress' | 'done' | undefined = tasks[0]?.status; void status })",
      "const frame = { type: 'pong' } as ServerFrame",
      'const code: number = CloseCode.GOING_AWAY',
      'export { client, frame, code }',
      ''
    ].join('\n')
  })
  writeFileSync(`${dir}/tsconfig.json`, JSON.stringify({
    compilerOptions: {
      target: 'ES2022',
      module: 'NodeNext',
      moduleResolution: 'NodeNext',
      lib: ['ES2022', 'DOM'],
      types: [],
      strict: true,
      noEmit: true,
      skipLibCheck: false
    },
    files: ['consumer.ts']
  }))
  const tsc = resolve(root, 'node_modules/typescript/bin/tsc')
  const outcome = await promisify(execFile)(process.execPath, [tsc, '-p', dir, '--listFiles'], { cwd: dir })
    .then(({ stdout }) => ({ ok: true, stdout }), (err: { stdout?: string }) => ({ ok: false, stdout: err.stdout ?? String(err) }))
  const diagnostics = outcome.stdout.split('\n').filter((line) => line.includes('error TS'))
  t.same(diagnostics, [], 'no type error')
  t.ok(outcome.ok, 'tsc succeeded')
  const files = outcome.stdout.split('\n').filter((line) => line.startsWith('/'))
  t.ok(files.some((file) => file.endsWith('/dist/entries/client.d.ts')), 'through the re-export atlas-realtime/client')
  t.ok(files.some((file) => file.endsWith('/client/dist/client/index.d.ts')), 'the consumer compiled against the SDK package\'s published declarations')
  t.same(files.filter((file) => /node_modules\/(@types\/node|drizzle-orm|fastify|@fastify)\//.test(file)), [], 'no Node, Drizzle or Fastify declaration was loaded')
})
