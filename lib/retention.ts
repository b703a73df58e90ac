import type { Logger } from './logger.js'
import type { RetentionPolicy, TaskRepository } from './repository.js'

export interface RetentionOptions {
  repository: TaskRepository
  logger: Logger
  /** The policy; what it leaves out gets the defaults below (0 for any limit: none). */
  policy: RetentionPolicy
  /** How often the policy is applied (0: never on its own; `prune()` still works). */
  intervalMs: number
  /** Runs before each prune: what is known to be published must be recorded first. */
  beforePrune: () => Promise<void>
}

/**
 * Bounded by default: a log nobody prunes grows forever. A week, or 50,000 events per team,
 * covers any realistic offline client; one further behind refetches the list.
 */
export const DEFAULT_RETENTION: Required<RetentionPolicy> = { maxEventsPerTeam: 50_000, maxEventAgeMs: 7 * 24 * 3600_000, mutationIdTtlMs: 24 * 3600_000 }

/** Applies the event log's retention policy on a timer. */
export class RetentionPruner {
  readonly #repository: TaskRepository
  readonly #log: Logger
  readonly #policy: Required<RetentionPolicy>
  readonly #beforePrune: () => Promise<void>
  readonly #timer: NodeJS.Timeout | undefined
  #running = false

  constructor (options: RetentionOptions) {
    this.#repository = options.repository
    this.#log = options.logger
    this.#policy = { ...DEFAULT_RETENTION, ...options.policy }
    this.#beforePrune = options.beforePrune
    if (options.intervalMs > 0) {
      this.#timer = setInterval(() => { void this.prune() }, options.intervalMs)
      this.#timer.unref()
    }
  }

  /** Applies the policy now. Never rejects: a failure is logged and retried at the next round. */
  async prune (): Promise<void> {
    // A round that outlasts the interval (a slow database) is not joined by the next one.
    if (this.#running) return
    this.#running = true
    try {
      await this.#beforePrune()
      const removed = await this.#repository.prune(this.#policy)
      if (removed.events > 0 || removed.mutationIds > 0) this.#log.debug(removed, 'atlas: pruned event log')
    } catch (err) {
      this.#log.warn({ err }, 'atlas: pruning the event log failed; retrying later')
    } finally {
      this.#running = false
    }
  }

  close (): void {
    clearInterval(this.#timer)
  }
}
