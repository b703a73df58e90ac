/** Registration-time option checks, so a misconfiguration fails at start-up with a clear message. */

export function optionError (plugin: string, message: string): Error {
  return new TypeError(`${plugin}: ${message}`)
}

export function checkPositiveInteger (plugin: string, name: string, value: unknown, { allowZero = false } = {}): number | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0 || (!allowZero && value === 0)) {
    throw optionError(plugin, `option ${name} must be a ${allowZero ? 'non-negative' : 'positive'} integer (got ${JSON.stringify(value)})`)
  }
  return value
}

export function checkFunction (plugin: string, name: string, value: unknown, { required = false } = {}): void {
  if (value === undefined && !required) return
  if (typeof value !== 'function') {
    throw optionError(plugin, `option ${name} must be a function${required ? ' and is required' : ''} (got ${typeof value})`)
  }
}

export function checkString (plugin: string, name: string, value: unknown, { required = false, pattern }: { required?: boolean, pattern?: RegExp } = {}): void {
  if (value === undefined && !required) return
  if (typeof value !== 'string' || value === '' || (pattern !== undefined && !pattern.test(value))) {
    throw optionError(plugin, `option ${name} must be a non-empty string${pattern === undefined ? '' : ` matching ${pattern}`}${required ? ' and is required' : ''} (got ${JSON.stringify(value)})`)
  }
}
