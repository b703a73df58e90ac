import t from 'tap'
import type { Broker, BrokerHandlers } from '../lib/broker.js'
import { Hub } from '../lib/hub.js'
import { silentLogger } from '../lib/logger.js'
import { OutboxRelay } from '../lib/outbox-relay.js'
import type { LoggedEvent } from '../lib/types.js'
import { eachBackend, openTestRepository, testDatabase } from './helpers/backends.js'

/**
 * A broker whose PUBLISH outcome the test decides, one call at a time: the hub's outbox logic
 * is what is under test here, not Redis (the Redis fault tests run against a real server).
 */
class GatedBroker implements Broker {
  readonly instanceId = 'gated'
  readonly connected = true
  readonly calls: Array<{ event: LoggedEvent, settle (ok: boolean): void }> = []
  handlers: BrokerHandlers | undefined
  #waiters: Array<() => void> = []
  attach (handlers: BrokerHandlers): void { this.handlers = handlers }
  async publish (event: LoggedEvent): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.calls.push({ event, settle: (ok) => { ok ? resolve() : reject(new Error('refused')) } })
      for (const wake of this.#waiters.splice(0)) wake()
    })
  }

  async subscribe (): Promise<void> {}
  async unsubscribe (): Promise<void> {}
  async signal (): Promise<void> {}
  watchSignals (): void {}
  async close (): Promise<void> {}
  /** Resolves once `count` publishes have been asked for; fails after `timeoutMs`. */
  async calledTimes (count: number, timeoutMs = 5000): Promise<void> {
    let expired = false
    const deadline = setTimeout(() => { expired = true; for (const wake of this.#waiters.splice(0)) wake() }, timeoutMs)
    try {
      while (this.calls.length < count) {
        if (expired) throw new Error(`only ${this.calls.length} of ${count} publishes were asked for`)
        await new Promise<void>((resolve) => this.#waiters.push(resolve))
      }
    } finally {
      clearTimeout(deadline)
    }
  }
}

eachBackend(t, 'a relay asked for while one is still running runs when it ends, so nothing refused meanwhile stays behind', async (t, backend) => {
  // Its clock runs a minute ahead (another machine's, or simply this same millisecond): the
  // start-up relay must take every unpublished event, not only those older than "now".
  const { repository } = await openTestRepository(t, await testDatabase(t, backend), { now: () => Date.now() + 60_000 })
  // Committed by a process that died before publishing.
  await repository.create('red', { title: 'left unpublished' }, { actor: 'carol' })
  const broker = new GatedBroker()
  const relay = new OutboxRelay({ repository, broker, logger: silentLogger, relayIntervalMs: 0, relayGraceMs: 1000 })
  t.teardown(async () => { await relay.close(0) })
  // The hub catches up when the broker is back, then asks the relay for the outbox.
  const hub = new Hub({ repository, broker, onRecovered: () => { relay.relayAll() } })
  t.teardown(() => { hub.close() })

  await broker.calledTimes(1)
  t.equal(broker.calls[0].event.seq, 1, 'the start-up relay publishes seq 1, and it hangs')
  await repository.create('red', { title: 'while the broker is down' }, { actor: 'alice' })
  await broker.calledTimes(2)
  t.equal(broker.calls[1].event.seq, 2)
  broker.calls[1].settle(false)
  // The broker is back and asks for a relay while the first relay still waits on seq 1.
  broker.handlers?.onResubscribed()
  broker.calls[0].settle(true)

  await broker.calledTimes(3)
  const relayed = broker.calls.slice(2).map((call) => call.event.seq)
  t.ok(relayed.includes(2), `the relay asked for meanwhile publishes seq 2 (relayed ${relayed.join(',')})`)
  for (const call of broker.calls.slice(2)) call.settle(true)
  await relay.close(5000)
  t.same(await repository.unpublished(Date.now() + 1, 10), [], 'the outbox is empty once both are published')
})
