import { channel } from 'node:diagnostics_channel'

// What the core reports about itself, as pino and undici do: named diagnostics channels that cost
// one `hasSubscribers` check when nobody listens. The metrics plugin (plugins/metrics.ts)
// subscribes; so can an integrator's own tooling. Each message is a plain object built only
// when someone listens. The names and shapes are part of the package's API (README, "Metrics").

/** `{ connectionId, userId }`: a socket was accepted. */
export const connectionOpened = channel('atlas:connection:open')
/**
 * `{ connectionId, userId, code, durationMs, framesSent, bytesSent, slowConsumer }`: a socket
 * closed (`code` 1006 when it was dropped without a close frame; `slowConsumer` when the server
 * cut it off for not reading).
 */
export const connectionClosed = channel('atlas:connection:close')
/**
 * `{ count, lagMs, origin }`: one event was written to `count` live sockets of this instance,
 * `lagMs` after it was committed here (`origin: 'local'`) or received from the broker
 * (`origin: 'remote'`), on the monotonic clock.
 */
export const eventDelivered = channel('atlas:event:delivered')
/** `{ count }`: `count` events were written to one socket from the log (a resume). */
export const eventsReplayed = channel('atlas:event:replayed')
/** `{ reason }`: a client was told to resync (docs/protocol.md, `resync.reason`). */
export const resyncSent = channel('atlas:resync')
/** `{ code }`: a client frame was refused (an error frame code). */
export const frameRefused = channel('atlas:frame:refused')
/** `{ statusCode, code }`: an upgrade was refused with an HTTP status. */
export const upgradeRefused = channel('atlas:upgrade:refused')
/** `{ published, failed }`: one run of the outbox relay. */
export const outboxRelayed = channel('atlas:outbox:relay')
/** `{}`: the broker's connection came back after it was lost. */
export const brokerReconnected = channel('atlas:broker:reconnect')
/** `{ durationMs }`: one mutation's database transaction (the task and its event). */
export const transactionTimed = channel('atlas:db:transaction')
