import { spawn, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import t from 'tap'

// The desktop board (examples/desktop, Python and Qt) is tested by its own pytest suite against
// a real example server it starts itself; this runs that suite as part of `npm test`. Its
// dependencies are Debian packages (.ci/run installs them): when one is missing this FAILS,
// naming them, rather than skipping: a skipped desktop suite would let it rot unseen.

const root = fileURLToPath(new URL('../', import.meta.url))
// Debian's Python, where apt installs the packages (a pyenv `python3` earlier on PATH lacks them).
const PYTHON = '/usr/bin/python3'
const PACKAGES = 'python3-qtpy python3-pyside2.qtcore python3-pyside2.qtgui python3-pyside2.qtwidgets python3-pyside2.qttest python3-websocket python3-pytest python3-pytestqt'

t.test('the desktop client passes its pytest-qt suite against a real server', async (t) => {
  t.ok(existsSync(`${root}dist/examples/server.js`), 'the example server is built (npm test builds it first)')
  const probe = spawnSync(PYTHON, ['-c', 'import qtpy.QtWidgets, qtpy.QtTest, websocket, pytest, pytestqt'], {
    env: { ...process.env, QT_QPA_PLATFORM: 'offscreen' },
    encoding: 'utf8'
  })
  if (probe.error !== undefined || probe.status !== 0) {
    t.fail(`the desktop tests need ${PYTHON} with Qt for Python (via qtpy), websocket-client, pytest and pytest-qt: ` +
      `apt-get install -y ${PACKAGES}\n${probe.error?.message ?? probe.stderr}`)
    return
  }
  const { code, output } = await new Promise<{ code: number | null, output: string }>((resolve) => {
    const child = spawn(PYTHON, ['-m', 'pytest', 'examples/desktop/tests', '-q', '-p', 'no:cacheprovider'], {
      cwd: root,
      env: { ...process.env, QT_QPA_PLATFORM: 'offscreen', PYTHONDONTWRITEBYTECODE: '1' },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    let output = ''
    child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
    child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
    child.once('close', (status) => { resolve({ code: status, output }) })
  })
  t.equal(code, 0, `pytest examples/desktop/tests exited ${code}:\n${output}`)
  t.match(output, /\d+ passed/, 'pytest ran the desktop tests')
})
