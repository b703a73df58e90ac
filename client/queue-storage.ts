/**
 * Where a TaskStore keeps the mutations the server has not taken yet, so that they survive a
 * reload or a restart. The shape is the synchronous part of the Web Storage API, so
 * `localStorage` and `sessionStorage` are storages as they are; anything else (a file, a
 * database) fits behind these three methods. Values are JSON strings of a few KiB at most.
 */
export interface QueueStorage {
  getItem (key: string): string | null
  setItem (key: string, value: string): void
  removeItem (key: string): void
}

/** A storage that lives as long as the object: what a process without localStorage gets by default. */
export class MemoryStorage implements QueueStorage {
  readonly #items = new Map<string, string>()

  getItem (key: string): string | null { return this.#items.get(key) ?? null }
  setItem (key: string, value: string): void { this.#items.set(key, String(value)) }
  removeItem (key: string): void { this.#items.delete(key) }
  /** The keys held (for inspection). */
  keys (): string[] { return [...this.#items.keys()] }
}

/**
 * `globalThis.localStorage` where there is one (browsers), else a fresh MemoryStorage (Node,
 * workers). Reading `localStorage` throws in some sandboxed frames and with storage blocked:
 * those get memory too.
 */
export function defaultQueueStorage (): QueueStorage {
  try {
    const local = (globalThis as { localStorage?: QueueStorage }).localStorage
    if (local !== undefined && local !== null && typeof local.getItem === 'function') return local
  } catch {}
  return new MemoryStorage()
}
