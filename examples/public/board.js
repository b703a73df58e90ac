// The live task board: plain DOM over the Atlas client SDK (served from /sdk/client/ as the
// compiled ES modules of client/). All state lives in the SDK's TaskStore; this file only draws
// it and turns clicks into store calls. Edits work offline: the store keeps them (in
// localStorage, across reloads) and sends them when the server is reachable; the page shows
// what waits, and asks the user when an edit conflicts with someone else's.
import { AtlasClient, TaskStore } from '/sdk/client/index.js'

const COLUMNS = [['todo', 'To do'], ['in_progress', 'In progress'], ['done', 'Done']]
const STATUS_LABEL = Object.fromEntries(COLUMNS)
const STATE_LABEL = { connecting: 'Connecting…', open: 'Live', reconnecting: 'Reconnecting…', closed: 'Offline' }
const MAX_ACTIVITY = 50

const $ = (id) => document.getElementById(id)
const params = new URLSearchParams(location.hash.slice(1))

/** @type {AtlasClient | undefined} */
let client
/** @type {TaskStore | undefined} */
let store
/** The card being edited, with its draft, so a live update does not wipe what is typed. */
let editing = null
/** Rendered cards by task id: the element and the key it was drawn from. */
const cards = new Map()

// A new token or team in the address starts over cleanly.
window.addEventListener('hashchange', () => location.reload())

const token = params.get('token')
if (token === null || token === '') showSignIn()
else openBoard(token)

// ---------------------------------------------------------------- sign-in

async function showSignIn (message) {
  $('sign-in').hidden = false
  if (message !== undefined) {
    $('sign-in-error').textContent = message
    $('sign-in-error').hidden = false
  }
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault()
    const value = $('token-input').value.trim()
    if (value !== '') location.hash = new URLSearchParams({ token: value }).toString()
  })
  // Only a development server (no JWT_SECRET) lists demo users; elsewhere this is a 404.
  try {
    const response = await fetch('/demo/tokens')
    if (!response.ok) return
    const { users } = await response.json()
    const list = $('demo-list')
    for (const user of users) {
      const item = document.createElement('li')
      const button = document.createElement('button')
      button.type = 'button'
      button.dataset.user = user.userId
      button.append(user.userId)
      const teams = document.createElement('small')
      teams.textContent = user.teams.join(', ')
      button.append(teams)
      button.addEventListener('click', () => { location.hash = new URLSearchParams({ token: user.token }).toString() })
      item.append(button)
      list.append(item)
    }
    $('demo-users').hidden = false
  } catch {}
}

// ---------------------------------------------------------------- board

function openBoard (token) {
  $('board-view').hidden = false
  // The SDK sends the token as a Sec-WebSocket-Protocol entry (a browser cannot set headers on
  // a WebSocket) and in the Authorization header of its HTTP calls; never in a URL.
  client = new AtlasClient({ token })
  client.on('state', showState)
  client.on('welcome', onWelcome)
  client.on('error', (error) => {
    // A failed list load is retried on its own; the connection badge already says we are away.
    // A refused token or a revoked user stops the client: `stopped` below takes the user back to sign-in.
    if (error.code !== 'resync_failed' && error.code !== 'unauthorized' && error.code !== 'revoked') notice(error.message, 'error')
  })
  client.on('stopped', (reason) => {
    if (reason.code !== 'unauthorized' && reason.code !== 'revoked') return
    $('board-view').hidden = true
    showSignIn(reason.code === 'revoked'
      ? 'Your access was revoked. Pick a demo user or paste another token.'
      : 'That access token was refused. Pick a demo user or paste another token.')
  })
  showState(client.state)
  client.connect()

  $('sign-out').addEventListener('click', () => { location.hash = '' })
  $('team').addEventListener('change', (e) => {
    params.set('team', e.target.value)
    location.hash = params.toString()
  })
  $('new-task').addEventListener('submit', (e) => {
    e.preventDefault()
    const title = $('new-title').value.trim()
    if (title === '' || store === undefined) return
    $('new-title').value = ''
    store.create({ title })
  })
  $('columns').addEventListener('click', onCardClick)
  $('columns').addEventListener('submit', onEditSubmit)
  $('columns').addEventListener('input', onEditInput)
  enableDragAndDrop()
}

function onWelcome ({ userId, teams }) {
  $('user').textContent = userId
  $('who').hidden = false
  const select = $('team')
  select.replaceChildren(...teams.map((team) => new Option(team, team)))
  if (store !== undefined) {
    select.value = store.teamId
    return
  }
  if (teams.length === 0) {
    notice('This user belongs to no team.', 'error')
    return
  }
  const wanted = params.get('team')
  const teamId = wanted !== null && teams.includes(wanted) ? wanted : teams[0]
  select.value = teamId
  document.title = `${teamId} · Atlas task board`
  store = new TaskStore(client, teamId)
  store.on('change', (tasks) => { render(tasks); showUnsent() })
  store.on('applied', ({ event, previous }) => addActivity(event, previous))
  // The membership was revoked: no more events come, and what the board shows is no longer the user's to see.
  store.on('dropped', () => render([]))
  store.on('conflict', showConflict)
  store.on('rolledBack', (outcome) => {
    const title = outcome.task?.title ?? outcome.taskId
    const what = outcome.kind === 'create' ? 'New task' : `Your change to “${title}”`
    notice(`${what} was undone: ${outcome.reason}.`, 'warn')
  })
  // Rejects when the team is refused or the client stops: both are told by the handlers above.
  store.start().catch(() => {})
}

function showState (state) {
  const badge = $('connection')
  badge.dataset.state = state
  badge.textContent = STATE_LABEL[state] ?? state
  showUnsent()
}

/** How many edits the server has not taken yet (offline, or retrying): next to the connection badge. */
function showUnsent () {
  let badge = $('unsent')
  if (badge === null) {
    badge = element('span', 'state')
    badge.id = 'unsent'
    badge.setAttribute('role', 'status')
    $('connection').after(badge)
  }
  const count = store?.unsentCount ?? 0
  badge.hidden = count === 0
  badge.dataset.count = String(count)
  const away = client?.state !== 'open'
  badge.textContent = `${count} ${count === 1 ? 'edit' : 'edits'} not sent${away ? ' (offline: kept, sent when back)' : ''}`
  badge.title = 'Kept on this device across reloads, and sent with the same Idempotency-Key until the server takes them.'
}

/**
 * An edit the server refused because someone else's change came first (412), the task was
 * deleted meanwhile (404), or the user lost the team (403): both versions, and the choice.
 * The board shows theirs until the user decides.
 */
function showConflict (conflict) {
  const box = element('div', 'notice warn conflict')
  box.setAttribute('role', 'alert')
  box.dataset.mutationId = conflict.mutationId
  const title = (conflict.mine ?? conflict.theirs)?.title ?? 'a task'
  const what = conflict.kind === 'create' ? `New task “${title}”` : conflict.kind === 'delete' ? `Your deletion of “${title}”` : `Your change to “${title}”`
  const text = element('div')
  text.append(element('strong', '', `${what}: ${conflict.reason}.`))
  text.append(element('div', '', `Yours: ${summary(conflict.mine)}`))
  text.append(element('div', '', `Theirs: ${conflict.status === 404 ? 'deleted' : summary(conflict.theirs)}`))
  const actions = element('div', 'card-actions')
  const keep = element('button', '', conflict.status === 404 ? 'Re-create mine' : conflict.status === 403 ? 'Try again' : 'Keep mine')
  keep.type = 'button'
  keep.dataset.choice = 'mine'
  keep.addEventListener('click', () => { box.remove(); conflict.keepMine() })
  const take = element('button', '', conflict.status === 403 ? 'Discard mine' : 'Take theirs')
  take.type = 'button'
  take.dataset.choice = 'theirs'
  take.addEventListener('click', () => { box.remove(); conflict.takeTheirs() })
  actions.append(keep, take)
  text.append(actions)
  box.append(text)
  $('notices').append(box)
}

function summary (task) {
  if (task === null || task === undefined) return 'deleted'
  return `“${task.title}” in ${STATUS_LABEL[task.status] ?? task.status}${task.description ? `, “${task.description}”` : ''}`
}

// ---------------------------------------------------------------- rendering

function render (tasks) {
  const seen = new Set()
  const byColumn = Object.fromEntries(COLUMNS.map(([status]) => [status, []]))
  for (const task of tasks) {
    seen.add(task.id)
    const pending = store.isPending(task.id)
    const unsent = pending && store.isUnsent(task.id)
    const isEditing = editing?.id === task.id
    const key = JSON.stringify([task.title, task.description, task.status, task.version, task.updatedBy, task.assignee, pending, unsent, isEditing])
    let entry = cards.get(task.id)
    // The card being edited keeps its element (and the focus and text in it).
    if (entry === undefined || (entry.key !== key && !(isEditing && entry.editing))) {
      entry = { el: isEditing ? editCard(task) : viewCard(task, pending, unsent), key, editing: isEditing }
      cards.set(task.id, entry)
    }
    ;(byColumn[task.status] ?? byColumn.todo).push(entry.el)
  }
  for (const [id] of cards) if (!seen.has(id)) cards.delete(id)
  if (editing !== null && !seen.has(editing.id)) editing = null
  for (const [status] of COLUMNS) {
    const column = document.querySelector(`[data-column="${status}"]`)
    const list = column.querySelector('.cards')
    const wanted = byColumn[status]
    // Only touched when its cards changed: moving a node would blur a field being typed in.
    if (wanted.length !== list.children.length || wanted.some((el, i) => list.children[i] !== el)) list.replaceChildren(...wanted)
    column.querySelector('.count').textContent = String(wanted.length)
  }
}

function viewCard (task, pending, unsent) {
  const card = element('li', 'card')
  card.dataset.taskId = task.id
  card.dataset.status = task.status
  card.dataset.version = String(task.version)
  // A task created offline can be edited before the server has it: the store queues the edits behind its creation.
  const saved = true
  if (pending) card.classList.add('pending')
  if (unsent) card.classList.add('unsent')
  card.draggable = saved
  card.append(element('div', 'card-title', task.title))
  if (task.description !== '') card.append(element('p', 'card-desc', task.description))
  const waiting = unsent ? 'not sent yet' : 'saving…'
  const meta = task.version === 0
    ? waiting
    : `v${task.version} · ${task.version === 1 ? 'created' : 'changed'} by ${task.updatedBy}${task.assignee ? ` · for ${task.assignee}` : ''}${pending ? ` · ${waiting}` : ''}`
  card.append(element('div', 'card-meta', meta))
  const actions = element('div', 'card-actions')
  const index = COLUMNS.findIndex(([status]) => status === task.status)
  actions.append(
    actionButton('left', '◀', `Move to ${COLUMNS[index - 1]?.[1] ?? ''}`, !saved || index <= 0),
    actionButton('edit', 'Edit', 'Edit task', !saved),
    actionButton('delete', 'Delete', 'Delete task', !saved),
    element('span', 'spacer'),
    actionButton('right', '▶', `Move to ${COLUMNS[index + 1]?.[1] ?? ''}`, !saved || index >= COLUMNS.length - 1)
  )
  card.append(actions)
  return card
}

function editCard (task) {
  const card = element('li', 'card editing')
  card.dataset.taskId = task.id
  card.dataset.status = task.status
  card.dataset.version = String(task.version)
  const form = element('form', 'edit-form')
  const title = element('input')
  title.name = 'title'
  title.required = true
  title.maxLength = 200
  title.value = editing.title
  title.setAttribute('aria-label', 'Title')
  const description = element('textarea')
  description.name = 'description'
  description.rows = 3
  description.value = editing.description
  description.setAttribute('aria-label', 'Description')
  const actions = element('div', 'card-actions')
  const save = element('button', '', 'Save')
  save.type = 'submit'
  actions.append(save, actionButton('cancel', 'Cancel', 'Cancel editing', false))
  form.append(title, description, actions)
  card.append(form)
  queueMicrotask(() => title.focus())
  return card
}

function actionButton (action, text, label, disabled) {
  const button = element('button', '', text)
  button.type = 'button'
  button.dataset.action = action
  button.title = label
  button.setAttribute('aria-label', label)
  button.disabled = disabled
  return button
}

function element (tag, className = '', text) {
  const el = document.createElement(tag)
  if (className !== '') el.className = className
  if (text !== undefined) el.textContent = text
  return el
}

// ---------------------------------------------------------------- actions

function onCardClick (e) {
  const button = e.target.closest('button[data-action]')
  const card = e.target.closest('[data-task-id]')
  if (button === null || card === null || store === undefined) return
  const id = card.dataset.taskId
  const task = store.get(id)
  if (task === undefined) return
  const index = COLUMNS.findIndex(([status]) => status === task.status)
  switch (button.dataset.action) {
    case 'left':
    case 'right': {
      const next = COLUMNS[index + (button.dataset.action === 'left' ? -1 : 1)]
      if (next !== undefined) store.update(id, { status: next[0] })
      break
    }
    case 'edit':
      editing = { id, title: task.title, description: task.description }
      render(store.tasks)
      break
    case 'cancel':
      editing = null
      render(store.tasks)
      break
    case 'delete':
      store.remove(id)
      break
  }
}

function onEditInput (e) {
  if (editing === null || !e.target.closest('.editing')) return
  if (e.target.name === 'title') editing.title = e.target.value
  if (e.target.name === 'description') editing.description = e.target.value
}

function onEditSubmit (e) {
  e.preventDefault()
  if (editing === null || store === undefined) return
  const task = store.get(editing.id)
  const patch = {}
  if (task !== undefined && editing.title.trim() !== task.title) patch.title = editing.title.trim()
  if (task !== undefined && editing.description !== task.description) patch.description = editing.description
  const id = editing.id
  editing = null
  if (Object.keys(patch).length > 0) store.update(id, patch)
  else render(store.tasks)
}

function enableDragAndDrop () {
  const columns = $('columns')
  columns.addEventListener('dragstart', (e) => {
    const card = e.target.closest?.('[data-task-id]')
    if (card) e.dataTransfer.setData('text/x-atlas-task', card.dataset.taskId)
  })
  for (const column of columns.querySelectorAll('[data-column]')) {
    column.addEventListener('dragover', (e) => {
      if (!e.dataTransfer.types.includes('text/x-atlas-task')) return
      e.preventDefault()
      column.classList.add('drop')
    })
    column.addEventListener('dragleave', () => column.classList.remove('drop'))
    column.addEventListener('drop', (e) => {
      column.classList.remove('drop')
      const id = e.dataTransfer.getData('text/x-atlas-task')
      const task = store?.get(id)
      if (task === undefined || task.status === column.dataset.column) return
      e.preventDefault()
      store.update(id, { status: column.dataset.column })
    })
  }
}

// ---------------------------------------------------------------- activity and notices

/** One line per event: who did what to which task. */
function addActivity (event, previous) {
  const list = $('activity')
  list.querySelector('.empty')?.remove()
  const item = element('li')
  item.dataset.seq = String(event.seq)
  if (event.actor === client.userId) item.classList.add('mine')
  item.append(element('strong', 'actor', event.actor), ` ${describe(event, previous)}`)
  const time = element('time', '', new Date(event.at).toLocaleTimeString())
  time.dateTime = event.at
  item.append(time)
  list.prepend(item)
  while (list.children.length > MAX_ACTIVITY) list.lastElementChild.remove()
}

function describe (event, previous) {
  const title = `“${(event.task ?? previous)?.title ?? 'a task'}”`
  switch (event.type) {
    case 'task.created':
      return `created ${title}${event.task.status === 'todo' ? '' : ` in ${STATUS_LABEL[event.task.status]}`}`
    case 'task.deleted':
      return `deleted ${title}`
    case 'task.updated': {
      const task = event.task
      const parts = event.changes.map((field) => {
        switch (field) {
          case 'status': return `moved ${title} ${previous ? `from ${STATUS_LABEL[previous.status]} ` : ''}to ${STATUS_LABEL[task.status]}`
          case 'title': return previous ? `renamed “${previous.title}” to “${task.title}”` : `renamed a task to “${task.title}”`
          case 'description': return `edited the description of ${title}`
          case 'assignee': return task.assignee ? `assigned ${title} to ${task.assignee}` : `unassigned ${title}`
          case 'dueDate': return task.dueDate ? `set ${title} due ${task.dueDate}` : `cleared the due date of ${title}`
          default: return `changed ${field} of ${title}`
        }
      })
      return parts.join('; ')
    }
    default:
      return `changed ${title}`
  }
}

function notice (text, kind = 'warn') {
  const box = element('div', `notice ${kind}`)
  box.setAttribute('role', kind === 'error' ? 'alert' : 'status')
  const close = element('button', '', '×')
  close.type = 'button'
  close.setAttribute('aria-label', 'Dismiss')
  close.addEventListener('click', () => box.remove())
  box.append(element('span', '', text), close)
  $('notices').append(box)
  setTimeout(() => box.remove(), 10_000)
}
