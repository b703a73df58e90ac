export type Listener<T> = (value: T) => void

/**
 * A minimal typed event emitter that works the same in browsers and Node. A listener that
 * throws does not stop the others nor the SDK's own bookkeeping: its error is rethrown on a
 * fresh task, where the host reports it (window.onerror, or Node's uncaughtException).
 */
export class Emitter<Events extends object> {
  readonly #listeners = new Map<keyof Events, Set<Listener<never>>>()

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof Events>(type: K, listener: Listener<Events[K]>): () => void {
    let set = this.#listeners.get(type)
    if (set === undefined) this.#listeners.set(type, set = new Set())
    set.add(listener as Listener<never>)
    return () => { this.off(type, listener) }
  }

  off<K extends keyof Events>(type: K, listener: Listener<Events[K]>): void {
    this.#listeners.get(type)?.delete(listener as Listener<never>)
  }

  /** Whether anyone listens to `type` (a store decides by it whether the app resolves conflicts itself). */
  protected listens<K extends keyof Events>(type: K): boolean {
    return (this.#listeners.get(type)?.size ?? 0) > 0
  }

  protected emit<K extends keyof Events>(type: K, value: Events[K]): void {
    const set = this.#listeners.get(type)
    if (set === undefined) return
    for (const listener of [...set]) {
      try {
        (listener as Listener<Events[K]>)(value)
      } catch (err) {
        setTimeout(() => { throw err }, 0)
      }
    }
  }
}
