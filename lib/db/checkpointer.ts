import { Worker } from 'node:worker_threads'
import { createRequire } from 'node:module'
import type Database from 'better-sqlite3'

export interface CheckpointResult {
  /** Frames in the WAL when the checkpoint ran. */
  log: number
  /** Of those, frames now copied into the database file. */
  checkpointed: number
}

export interface WalCheckpointerOptions {
  /** The database file (the one `connection` has open). */
  path: string
  /** How often the background thread checkpoints, in ms. */
  intervalMs: number
  busyTimeoutMs: number
  /** Told of each checkpoint that found new frames. */
  onCheckpoint?: (result: CheckpointResult) => void
  /** Told when the background thread failed; checkpoints are then back on `connection`. */
  onFailure?: (err: Error) => void
}

/**
 * The thread's code, run as a CommonJS eval worker so that it needs no file of its own next to
 * either the TypeScript sources or dist/. PASSIVE never waits for and never blocks a writer.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads')
const Database = require(workerData.driver)
const db = new Database(workerData.path, { timeout: workerData.busyTimeoutMs, fileMustExist: true })
let last = ''
const timer = setInterval(() => {
  const [{ log, checkpointed }] = db.pragma('wal_checkpoint(PASSIVE)')
  const seen = log + ':' + checkpointed
  if (checkpointed > 0 && seen !== last) parentPort.postMessage({ log, checkpointed })
  last = seen
}, workerData.intervalMs)
parentPort.on('message', () => { clearInterval(timer); db.close(); parentPort.close() })
`

const SQLITE_DEFAULT_AUTOCHECKPOINT = 1000

/**
 * Moves WAL checkpoints off the event loop. SQLite's automatic checkpoint runs inside whichever
 * commit crosses 1,000 WAL pages: that commit then copies every page into the database file and
 * fsyncs twice, stalling the event loop for milliseconds (every delivery queued behind it waits).
 * Here the writing connection never checkpoints; a worker thread with its own connection does,
 * on a timer. If that thread dies, the writing connection takes checkpoints back, so the WAL
 * never grows without bound.
 */
export class WalCheckpointer {
  readonly #connection: Database.Database
  readonly #worker: Worker
  readonly #exited: Promise<void>
  readonly #autocheckpoint: number
  #stopping = false

  constructor (connection: Database.Database, options: WalCheckpointerOptions) {
    this.#connection = connection
    const current = connection.pragma('wal_autocheckpoint', { simple: true })
    this.#autocheckpoint = typeof current === 'number' && current > 0 ? current : SQLITE_DEFAULT_AUTOCHECKPOINT
    connection.pragma('wal_autocheckpoint = 0')
    this.#worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: {
        driver: createRequire(import.meta.url).resolve('better-sqlite3'),
        path: options.path,
        intervalMs: options.intervalMs,
        busyTimeoutMs: options.busyTimeoutMs
      }
    })
    // Housekeeping only: it must never keep a process alive that is otherwise done.
    this.#worker.unref()
    this.#worker.on('message', (result: CheckpointResult) => { options.onCheckpoint?.(result) })
    let failure: Error | undefined
    this.#worker.on('error', (err) => { failure = err })
    this.#exited = new Promise((resolve) => {
      this.#worker.once('exit', (code) => {
        if (!this.#stopping) {
          this.#restoreAutocheckpoint()
          options.onFailure?.(failure ?? new Error(`WAL checkpoint thread exited with code ${code}`))
        }
        resolve()
      })
    })
  }

  /** Stops the thread; resolves once it has closed its connection and exited. */
  async close (): Promise<void> {
    if (!this.#stopping) {
      this.#stopping = true
      // Held open until the thread has closed its connection cleanly.
      this.#worker.ref()
      this.#worker.postMessage('close')
    }
    await this.#exited
  }

  #restoreAutocheckpoint (): void {
    if (this.#connection.open) this.#connection.pragma(`wal_autocheckpoint = ${this.#autocheckpoint}`)
  }
}
