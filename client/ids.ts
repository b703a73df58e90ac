/**
 * A fresh mutation id (sent as Idempotency-Key, echoed in the event as `mutationId`).
 * crypto.randomUUID exists only in secure contexts (https, localhost); a board opened over
 * plain http on a LAN address still has getRandomValues.
 */
export function newMutationId (): string {
  const c = globalThis.crypto
  if (typeof c?.randomUUID === 'function') return c.randomUUID()
  const bytes = new Uint8Array(16)
  c.getRandomValues(bytes)
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
}
