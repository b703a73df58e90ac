import { randomUUID } from 'node:crypto'
import type { Broker, BrokerHandlers, SignalWatcher, StatsWatcher } from './broker.js'
import type { LoggedEvent } from './types.js'

/**
 * The in-process stand-in for Redis. Brokers created on the same bus reach each other, so
 * several instances in one process (tests, or a single-process deployment with workers sharing
 * a bus) behave like instances sharing Redis. With no bus given, each broker has its own.
 */
export class MemoryBus {
  readonly #members = new Set<MemoryBroker>()
  join (broker: MemoryBroker): void { this.#members.add(broker) }
  leave (broker: MemoryBroker): void { this.#members.delete(broker) }
  deliver (from: MemoryBroker, event: LoggedEvent): void {
    for (const member of this.#members) {
      if (member !== from) member.receive(event)
    }
  }

  signal (from: MemoryBroker, topic: string): void {
    for (const member of this.#members) {
      if (member !== from) member.receiveSignal(topic)
    }
  }

  stats (from: MemoryBroker, sample: string): void {
    for (const member of this.#members) {
      if (member !== from) member.receiveStats(sample, from.instanceId)
    }
  }
}

export class MemoryBroker implements Broker {
  readonly instanceId: string
  /** In-process: always. */
  readonly connected = true
  readonly #bus: MemoryBus
  readonly #teams = new Set<string>()
  #handlers: BrokerHandlers | undefined
  readonly #watchers = new Set<SignalWatcher>()
  readonly #statsWatchers = new Set<StatsWatcher>()

  constructor (options: { bus?: MemoryBus, instanceId?: string } = {}) {
    this.instanceId = options.instanceId ?? randomUUID()
    this.#bus = options.bus ?? new MemoryBus()
    this.#bus.join(this)
  }

  attach (handlers: BrokerHandlers): void { this.#handlers = handlers }

  async publish (event: LoggedEvent): Promise<void> {
    // Delivered on a later tick, as a network broker would, so no caller depends on re-entrancy.
    queueMicrotask(() => this.#bus.deliver(this, event))
  }

  /** @internal called by the bus */
  receive (event: LoggedEvent): void {
    // A copy of its own: the arrival here starts this instance's delivery lag.
    if (this.#teams.has(event.teamId)) this.#handlers?.onEvent({ teamId: event.teamId, seq: event.seq, payload: event.payload, arrivedAt: performance.now() })
  }

  async signal (topic: string): Promise<void> {
    queueMicrotask(() => this.#bus.signal(this, topic))
  }

  watchSignals (watcher: SignalWatcher): void { this.#watchers.add(watcher) }

  /** @internal called by the bus */
  receiveSignal (topic: string): void {
    for (const watcher of this.#watchers) watcher.onSignal(topic)
  }

  publishStats (sample: string): void {
    queueMicrotask(() => this.#bus.stats(this, sample))
  }

  watchStats (watcher: StatsWatcher): void { this.#statsWatchers.add(watcher) }

  /** @internal called by the bus */
  receiveStats (sample: string, origin: string): void {
    for (const watcher of this.#statsWatchers) watcher(sample, origin)
  }

  async subscribe (teamId: string): Promise<void> { this.#teams.add(teamId) }
  async unsubscribe (teamId: string): Promise<void> { this.#teams.delete(teamId) }
  async close (): Promise<void> { this.#bus.leave(this); this.#teams.clear(); this.#watchers.clear(); this.#statsWatchers.clear() }
}
