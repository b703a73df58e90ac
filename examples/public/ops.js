// The operations page: asks for the admin token, polls GET /ops/stats every second and draws
// each instance's figures with uPlot (loaded before this module by ops.html, when installed).
// Everything shown of an instance, its id included, arrived over the broker and is untrusted:
// it is only ever set as text, never as HTML.

const POLL_MS = 1000
/** Points kept per chart: two minutes at one a second. */
const WINDOW = 120
/** The request's own deadline: a hung server shows as stalled, not as a frozen page. */
const REQUEST_TIMEOUT_MS = 5000
const TOKEN_KEY = 'atlas.ops.adminToken'
const COLORS = ['#2f6feb', '#d1242f', '#1a7f37', '#9a6700', '#8250df', '#0a7ea4', '#bf3989', '#57606a']

const $ = (id) => document.getElementById(id)
const signIn = $('sign-in')
const dashboard = $('dashboard')
const feed = $('feed')
const updated = $('updated')
const rows = $('instance-rows')

/** One entry per point: the time, in seconds, of the answer. */
let xs = []
/** Instance id → { color, self, series: { connections: [], delivered: [], … } }, in order of first appearance. */
let instances = new Map()
let charts = []
let chartsFor = ''
let timer
let token = sessionStorage.getItem(TOKEN_KEY)

const FIGURES = ['connections', 'delivered', 'committed', 'lagP50', 'lagP99', 'outbox', 'broker']

function showSignIn (message) {
  clearTimeout(timer)
  token = null
  sessionStorage.removeItem(TOKEN_KEY)
  for (const chart of charts) chart.destroy()
  charts = []
  chartsFor = ''
  xs = []
  instances = new Map()
  rows.replaceChildren()
  dashboard.hidden = true
  $('sign-out').hidden = true
  signIn.hidden = false
  updated.textContent = ''
  setFeed('closed', 'Not signed in')
  const error = $('sign-in-error')
  error.hidden = message === undefined
  error.textContent = message ?? ''
  $('token-input').focus()
}

function start () {
  signIn.hidden = true
  dashboard.hidden = false
  $('sign-out').hidden = false
  $('no-charts').hidden = typeof window.uPlot === 'function'
  setFeed('stalled', 'Connecting…')
  void poll()
}

function setFeed (state, text) {
  feed.dataset.state = state
  feed.textContent = text
}

async function poll () {
  let response
  try {
    response = await fetch('/ops/stats', {
      headers: { authorization: `Bearer ${token}` },
      cache: 'no-store',
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS)
    })
  } catch {
    setFeed('stalled', 'No answer')
    timer = setTimeout(poll, POLL_MS)
    return
  }
  if (response.status === 401) {
    showSignIn('The admin token was not accepted.')
    return
  }
  if (!response.ok) {
    setFeed('stalled', `Answered ${response.status}`)
  } else {
    record(await response.json())
    setFeed('live', 'Live')
  }
  timer = setTimeout(poll, POLL_MS)
}

/** Adds one point to every instance's series (null where an instance sent nothing) and redraws. */
function record (stats) {
  xs.push(Date.now() / 1000)
  const seen = new Set()
  for (const sample of stats.instances) {
    seen.add(sample.instance)
    let entry = instances.get(sample.instance)
    if (entry === undefined) {
      entry = { color: COLORS[instances.size % COLORS.length], series: Object.fromEntries(FIGURES.map((f) => [f, new Array(xs.length - 1).fill(null)])) }
      instances.set(sample.instance, entry)
    }
    entry.self = sample.self
    entry.latest = sample
    const values = {
      connections: sample.connections,
      delivered: sample.deliveredPerSecond,
      committed: sample.committedPerSecond,
      lagP50: sample.lagP50Ms,
      lagP99: sample.lagP99Ms,
      outbox: sample.outboxUnpublished,
      broker: sample.brokerConnected ? 1 : 0
    }
    for (const figure of FIGURES) entry.series[figure].push(values[figure])
  }
  for (const [id, entry] of instances) {
    entry.gone = !seen.has(id)
    if (entry.gone) for (const figure of FIGURES) entry.series[figure].push(null)
  }
  if (xs.length > WINDOW) {
    const extra = xs.length - WINDOW
    xs = xs.slice(extra)
    for (const entry of instances.values()) for (const figure of FIGURES) entry.series[figure] = entry.series[figure].slice(extra)
  }
  // An instance gone for the whole window leaves the page.
  for (const [id, entry] of instances) {
    if (entry.series.connections.every((v) => v === null)) instances.delete(id)
  }
  updated.textContent = `Updated ${new Date().toLocaleTimeString()} by instance ${short(stats.self)}`
  renderTable()
  renderCharts()
}

function short (id) {
  return id.length > 8 ? id.slice(0, 8) : id
}

function formatRate (n) { return n >= 100 ? n.toFixed(0) : n.toFixed(1) }
function formatMs (n) { return n === null ? '–' : n < 10 ? `${n.toFixed(2)} ms` : `${n.toFixed(0)} ms` }

function renderTable () {
  const lines = []
  for (const [id, entry] of instances) {
    const s = entry.latest
    const tr = document.createElement('tr')
    tr.dataset.instance = id
    if (entry.gone) tr.dataset.gone = ''
    const name = document.createElement('td')
    const swatch = document.createElement('span')
    swatch.className = 'swatch'
    swatch.style.background = entry.color
    const label = document.createElement('span')
    label.className = 'instance-id'
    label.textContent = short(id)
    label.title = id
    name.append(swatch, label)
    if (entry.self) {
      const self = document.createElement('span')
      self.className = 'self'
      self.textContent = '(answering)'
      name.append(self)
    }
    tr.append(name)
    const cell = (field, value, text) => {
      const td = document.createElement('td')
      td.dataset.field = field
      td.dataset.value = String(value)
      td.textContent = text
      tr.append(td)
    }
    cell('connections', s.connections, String(s.connections))
    cell('delivered', s.deliveredPerSecond, formatRate(s.deliveredPerSecond))
    cell('committed', s.committedPerSecond, formatRate(s.committedPerSecond))
    cell('lagP50', s.lagP50Ms ?? '', formatMs(s.lagP50Ms))
    cell('lagP99', s.lagP99Ms ?? '', formatMs(s.lagP99Ms))
    cell('outbox', s.outboxUnpublished, String(s.outboxUnpublished))
    cell('broker', s.brokerConnected ? 'up' : 'down', s.brokerConnected ? 'connected' : 'DOWN')
    cell('age', s.ageMs, entry.gone ? 'gone' : `${(s.ageMs / 1000).toFixed(1)} s`)
    lines.push(tr)
  }
  rows.replaceChildren(...lines)
}

/** What each chart draws: per instance, one or two series of its figures. */
const CHARTS = {
  connections: { lines: [['connections', '']], min: 0 },
  events: { lines: [['delivered', ' delivered'], ['committed', ' committed']], min: 0 },
  lag: { lines: [['lagP50', ' p50'], ['lagP99', ' p99']], min: 0 },
  outbox: { lines: [['outbox', '']], min: 0 },
  // Up is 1, down 0; each instance's line a little lower than the one before, so that
  // instances in the same state do not hide each other.
  broker: { lines: [['broker', '']], range: [-0.2, 1.2], stepped: true, offset: 0.04 }
}

function renderCharts () {
  const uPlot = window.uPlot
  if (typeof uPlot !== 'function') return
  // The instances (and their order) decide the series: rebuild the charts when they change.
  const key = [...instances.keys()].join(',')
  if (key !== chartsFor) {
    for (const chart of charts) chart.destroy()
    charts = Object.entries(CHARTS).map(([name, spec]) => {
      const plot = document.querySelector(`[data-chart="${name}"] .plot`)
      plot.replaceChildren()
      const series = [{}]
      for (const [id, entry] of instances) {
        spec.lines.forEach(([, suffix], i) => {
          const shown = (v) => name === 'broker' ? (Math.round(v) === 1 ? 'up' : 'down') : String(Math.round(v * 100) / 100)
          series.push({
            label: short(id) + suffix,
            stroke: entry.color,
            width: 2,
            dash: i === 1 ? [6, 4] : undefined,
            spanGaps: false,
            paths: spec.stepped ? uPlot.paths.stepped({ align: 1 }) : undefined,
            value: (_u, v) => v === null || v === undefined ? '–' : shown(v)
          })
        })
      }
      const chart = new uPlot({
        width: plot.clientWidth || 560,
        height: 200,
        series,
        scales: { x: { time: true }, y: spec.range === undefined ? { range: (_u, min, max) => [Math.min(spec.min, min ?? 0), Math.max(1, max ?? 1) * 1.1] } : { range: spec.range } },
        axes: [{}, spec.offset === undefined ? { size: 56 } : { size: 56, splits: () => [0, 1], values: (_u, splits) => splits.map((v) => v === 1 ? 'up' : 'down') }],
        legend: { live: true }
      }, [[]], plot)
      chart.atlasSpec = spec
      return chart
    })
    chartsFor = key
  }
  for (const chart of charts) {
    const data = [xs]
    const { lines, offset } = chart.atlasSpec
    let i = 0
    for (const entry of instances.values()) {
      const shift = offset === undefined ? 0 : offset * i++
      for (const [figure] of lines) data.push(shift === 0 ? entry.series[figure] : entry.series[figure].map((v) => v === null ? null : v - shift))
    }
    chart.setData(data)
  }
}

window.addEventListener('resize', () => {
  for (const chart of charts) chart.setSize({ width: chart.root.parentElement.clientWidth, height: 200 })
})

$('token-form').addEventListener('submit', (event) => {
  event.preventDefault()
  const given = $('token-input').value.trim()
  if (given === '') return
  token = given
  sessionStorage.setItem(TOKEN_KEY, token)
  $('token-input').value = ''
  start()
})
$('sign-out').addEventListener('click', () => { showSignIn() })

if (token === null) showSignIn()
else start()
