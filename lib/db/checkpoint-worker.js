// @ts-check
// JavaScript with JSDoc types rather than TypeScript: under tap, a worker started from a .ts
// file would load the TypeScript compiler in every thread (1.4 s of CPU each; the suite opens
// dozens of databases), while this file runs as it is, in dist/ and in the sources alike. The
// build type-checks it (tsconfig.build.json: checkJs) and copies it to dist/lib/db/.
import { parentPort, workerData } from 'node:worker_threads'
import Database from 'better-sqlite3'

/** @typedef {import('./checkpointer.js').CheckpointWorkerData} CheckpointWorkerData */
/** @typedef {import('./checkpointer.js').CheckpointResult} CheckpointResult */

/*
 * The checkpoint thread, started by WalCheckpointer (checkpointer.ts) and never imported: its
 * own connection to the database file, a PASSIVE checkpoint on a timer. PASSIVE never waits for
 * and never blocks a writer. Any message from the parent means stop: the connection is closed
 * before the thread exits, so no checkpoint is cut short.
 */
if (parentPort === null) throw new Error('checkpoint-worker.js runs as a worker thread of WalCheckpointer')
const port = parentPort
const { path, intervalMs, busyTimeoutMs } = /** @type {CheckpointWorkerData} */ (workerData)
const db = new Database(path, { timeout: busyTimeoutMs, fileMustExist: true })
let last = ''
const timer = setInterval(() => {
  const [{ log, checkpointed }] = /** @type {CheckpointResult[]} */ (db.pragma('wal_checkpoint(PASSIVE)'))
  const seen = `${log}:${checkpointed}`
  /** @type {CheckpointResult} */
  const result = { log, checkpointed }
  if (checkpointed > 0 && seen !== last) port.postMessage(result)
  last = seen
}, intervalMs)
port.on('message', () => {
  clearInterval(timer)
  db.close()
  port.close()
})
