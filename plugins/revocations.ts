import fp from 'fastify-plugin'
import type { FastifyPluginAsync } from 'fastify'
import { isTeamId } from '../protocol/constants.js'
import { isWellFormed } from '../lib/well-formed.js'
import { MAX_USER_ID_LENGTH } from './auth.js'
import { group, optionsChecker, type OptionsOf } from './options.js'

export const AtlasRevocationsOptionsSchema = group({}, { $id: 'AtlasRevocationsOptions', description: 'Options of atlasRevocations (none).' })
export type AtlasRevocationsOptions = OptionsOf<typeof AtlasRevocationsOptionsSchema>

/** Whom a revocation takes away: a user entirely, or the user's membership of one team. */
export interface RevocationTarget {
  userId: string
  /** Only this team: the user's sockets lose it (`unsubscribed` with reason `revoked`). Absent: the user's sockets are closed with 4004. */
  teamId?: string
}

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * Revokes a user, or a user's membership of one team, on the open sockets of every
     * instance: recorded in the database, applied here at once, and signalled through the
     * broker so the others apply it (within a second while the broker is up; when it is back,
     * after an outage). Resolves once recorded and applied here; it never waits for Redis.
     * Your `authenticate` must refuse the user's credential from now on too: this reaches
     * sockets already open, not the next upgrade.
     */
    atlasRevoke (target: RevocationTarget): Promise<void>
  }
}

const NAME = 'atlas-revocations'
/** Revocations read per query while catching up. */
const PAGE = 500
const TOPIC = 'revocations'

const checkOptions = optionsChecker(NAME, AtlasRevocationsOptionsSchema)

const revocationsPlugin: FastifyPluginAsync<AtlasRevocationsOptions> = async (fastify, rawOptions) => {
  checkOptions(rawOptions)
  const repository = fastify.taskRepository
  const broker = fastify.atlasBroker
  const connections = fastify.atlasConnections
  // Sockets open now were authenticated after every revocation already recorded.
  let applied = await repository.lastRevocationId()
  /** A signal that could not be sent (broker down): sent when the broker is back. */
  let owed = false

  /** The reads, one after another: each applies what was recorded after the last applied, in id order. */
  let reads: Promise<void> = Promise.resolve()
  const read = async (): Promise<void> => {
    for (;;) {
      const page = await repository.revocationsAfter(applied, PAGE)
      for (const { id, userId, teamId } of page) {
        connections.revoke(userId, teamId ?? undefined)
        applied = id
      }
      if (page.length < PAGE) return
    }
  }
  const catchUp = async (): Promise<void> => {
    reads = reads.then(read).catch((err: unknown) => {
      fastify.log.warn({ err }, 'atlas: reading revocations failed; applied at the next signal')
    })
    await reads
  }
  const signal = async (): Promise<void> => {
    try {
      await broker.signal(TOPIC)
      owed = false
    } catch (err) {
      owed = true
      fastify.log.warn({ err }, 'atlas: broker unreachable; the revocation reaches other instances when it is back')
    }
  }

  broker.watchSignals({
    onSignal: (topic) => { if (topic === TOPIC) void catchUp() },
    onResubscribed: () => {
      void catchUp()
      if (owed) void signal()
    }
  })

  fastify.decorate('atlasRevoke', async (target: RevocationTarget) => {
    const { userId, teamId } = (target ?? {}) as Partial<RevocationTarget>
    if (typeof userId !== 'string' || userId === '' || userId.length > MAX_USER_ID_LENGTH || !isWellFormed(userId)) {
      throw new TypeError(`atlasRevoke: userId must be a non-empty string of at most ${MAX_USER_ID_LENGTH} characters`)
    }
    if (teamId !== undefined && !isTeamId(teamId)) throw new TypeError('atlasRevoke: teamId must be a team id')
    await repository.revoke(userId, teamId ?? null)
    await catchUp()
    // Not awaited: a PUBLISH written just as Redis went away waits in ioredis for its retries
    // (over a minute); the revocation is recorded, and is signalled again when Redis is back.
    void signal()
  })
}

export const atlasRevocations = fp(revocationsPlugin, {
  fastify: '5.x',
  name: NAME,
  dependencies: ['atlas-repository', 'atlas-broker', 'atlas-websocket']
})
export default atlasRevocations
