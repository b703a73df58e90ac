import type { LoggedEvent } from './types.js'

/**
 * Carries committed events between the instances of one deployment. It is at-most-once by
 * nature (Redis pub/sub drops what a reconnecting subscriber misses): the hub makes delivery
 * whole by reading the event log, so a broker only has to be fast and to say when it may have
 * missed something (`onResubscribed`).
 */
export interface Broker {
  /** This process's id; messages an instance published itself are never handed back to it. */
  readonly instanceId: string
  /** Whether the broker can carry messages both ways now (readiness reports it). */
  readonly connected: boolean
  /** Sends a committed event to the other instances. Rejects when the broker cannot take it now. */
  publish (event: LoggedEvent): Promise<void>
  subscribe (teamId: string): Promise<void>
  unsubscribe (teamId: string): Promise<void>
  /** Registers the receiver of other instances' events and of reconnect notices. */
  attach (handlers: BrokerHandlers): void
  /**
   * Tells the other instances that something under `topic` changed in the database. A signal
   * carries nothing else, on a channel of its own (never mixed with team events): the receiver
   * reads the change from the database, so whoever can publish on the broker can make instances
   * read, never make them act. Rejects when the broker cannot take it now.
   */
  signal (topic: string): Promise<void>
  /** Adds a receiver of other instances' signals (several may watch). */
  watchSignals (watcher: SignalWatcher): void
  /**
   * Shares a small statistics sample of this instance (what the operations page charts) with
   * the other instances, on a channel of its own. Best effort: a sample that cannot be sent now
   * is dropped (the next one follows within a second), so it never waits for the broker.
   * Optional: a broker without it keeps every instance's page to its own figures.
   */
  publishStats? (sample: string): void
  /**
   * Adds a receiver of other instances' samples (several may watch). What arrives is untrusted:
   * whoever can publish on the broker can send anything under any instance id. A sample only
   * feeds charts, so a forged one can mislead an operator but make no instance act; receivers
   * check its shape and bound what they keep.
   */
  watchStats? (watcher: StatsWatcher): void
  close (): Promise<void>
}

/** `sample` as another instance published it (its own are never handed back), `origin` its instance id. */
export type StatsWatcher = (sample: string, origin: string) => void

export interface SignalWatcher {
  /** Another instance signalled `topic`. */
  onSignal (topic: string): void
  /**
   * Signals sent in between may be gone (the subscription was lost and is back), or a signal
   * that failed can be sent now (the publisher is back): read the database again.
   */
  onResubscribed (): void
}

/** Wire form of a signal: `<instanceId> <topic>`. */
export function encodeSignal (instanceId: string, topic: string): string {
  return `${instanceId} ${topic}`
}

/** Wire form of a stats sample, like a signal's: `<instanceId> <sample>`. */
export const encodeStats = encodeSignal

export function decodeStats (message: string): { origin: string, sample: string } | undefined {
  const decoded = decodeSignal(message)
  return decoded === undefined ? undefined : { origin: decoded.origin, sample: decoded.topic }
}

export function decodeSignal (message: string): { origin: string, topic: string } | undefined {
  const space = message.indexOf(' ')
  if (space <= 0 || space === message.length - 1) return undefined
  return { origin: message.slice(0, space), topic: message.slice(space + 1) }
}

export interface BrokerHandlers {
  /** An event another instance published. */
  onEvent (event: LoggedEvent): void
  /**
   * The subscription was lost and is active again: messages published in between may be gone,
   * so the receiver should catch up from the log. Also called when a publisher that failed can
   * publish again, so the outbox can be relayed.
   */
  onResubscribed (): void
}

/** Wire form of a broker message: `<instanceId> <seq> <payload>`; cheap to split, payload untouched. */
export function encodeBrokerMessage (instanceId: string, event: LoggedEvent): string {
  return `${instanceId} ${event.seq} ${event.payload}`
}

export function decodeBrokerMessage (teamId: string, message: string): { origin: string, event: LoggedEvent } | undefined {
  const first = message.indexOf(' ')
  const second = message.indexOf(' ', first + 1)
  if (first <= 0 || second <= first) return undefined
  const seq = Number(message.slice(first + 1, second))
  if (!Number.isSafeInteger(seq) || seq <= 0) return undefined
  return { origin: message.slice(0, first), event: { teamId, seq, payload: message.slice(second + 1) } }
}
