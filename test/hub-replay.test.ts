import t from 'tap'
import { openDatabase } from '../lib/db/open.js'
import { Hub, type HubClient } from '../lib/hub.js'
import { MemoryBroker } from '../lib/memory-broker.js'
import type { ServerControlFrame } from '../protocol/schemas.js'
import { SqliteTaskRepository } from '../lib/sqlite-repository.js'
import type { SharedFrame } from '../lib/shared-frame.js'
import type { TeamHistory } from '../lib/repository.js'

/** Records what the hub sends, as the seqs of events and the control frames, in order. */
class RecordingClient implements HubClient {
  readonly received: Array<number | ServerControlFrame> = []
  closed = false
  wants (): boolean { return true }
  sendEvent (frame: SharedFrame): void { this.received.push((JSON.parse(frame.payload.toString()) as { seq: number }).seq) }
  sendControl (frame: ServerControlFrame): void { this.received.push(frame) }
}

/** Another process prunes the log right after this one read the team's history. */
class PrunedBehindItsBack extends SqliteTaskRepository {
  pruneNext = false
  override async history (teamId: string): Promise<TeamHistory> {
    const seen = await super.history(teamId)
    if (this.pruneNext) {
      this.pruneNext = false
      await this.markPublished(await this.eventsAfter(teamId, 0, 1000))
      await this.prune({ maxEventsPerTeam: 2 })
    }
    return seen
  }
}

t.test('a resume whose history is pruned between reading it and replaying it gets a resync, not a hole', async (t) => {
  const database = openDatabase({ path: `${t.testdir()}/atlas.db` })
  t.teardown(async () => { await database.close() })
  const repository = new PrunedBehindItsBack(database.db)
  for (let i = 1; i <= 6; i++) await repository.create('red', { title: `task ${i}` }, { actor: 'alice' })
  const hub = new Hub({ repository, broker: new MemoryBroker() })
  t.teardown(() => { hub.close() })

  const client = new RecordingClient()
  repository.pruneNext = true
  await hub.join(client, 'red', 1)
  t.same(client.received, [{ type: 'resync', teamId: 'red', seq: 6, reason: 'history_pruned' }], 'told to resync; events 5 and 6 alone would have hidden the hole 2-4')

  await repository.create('red', { title: 'live' }, { actor: 'alice' })
  t.same(client.received.at(-1), 7, 'and live events follow the resync')
})
