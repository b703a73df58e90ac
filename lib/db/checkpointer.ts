import { Worker } from 'node:worker_threads'
import type Database from 'better-sqlite3'

export interface CheckpointResult {
  /** Frames in the WAL when the checkpoint ran. */
  log: number
  /** Of those, frames now copied into the database file. */
  checkpointed: number
}

/** What the thread is given (checkpoint-worker.js). */
export interface CheckpointWorkerData {
  /** The database file. */
  path: string
  intervalMs: number
  busyTimeoutMs: number
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

/** The thread's module: next to this one, in the sources as in dist/. */
const WORKER_URL = new URL('./checkpoint-worker.js', import.meta.url)

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
    const workerData: CheckpointWorkerData = { path: options.path, intervalMs: options.intervalMs, busyTimeoutMs: options.busyTimeoutMs }
    // No execArgv: the thread is plain JavaScript and needs none of this process's flags (a
    // TypeScript loader, as under tap, would cost it a second of CPU for nothing).
    this.#worker = new Worker(WORKER_URL, { workerData, execArgv: [] })
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
