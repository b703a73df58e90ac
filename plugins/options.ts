// Plugin options from one source: each plugin declares ONE TypeBox schema of its options, and
// from it come the TypeScript type (Static), the check at registration (compiled once, errors
// naming the option: "atlas-websocket: option heartbeatMs must be a positive integer (got 0)"),
// the defaults, and the README's option tables (scripts/doc-tables.ts).
import { Kind, OptionalKind, Type, type Static, type TArray, type TObject, type TOptional, type TSchema, type TString } from '@sinclair/typebox'
import { TypeCompiler, ValueErrorType, type ValueError } from '@sinclair/typebox/compiler'
import { OptionError } from '../lib/errors.js'
import { redactUrl } from '../lib/redact-url.js'

/** What the docs show of an option, besides its description. */
interface Doc {
  /** Markdown, for the README table (and the option's JSDoc through the type). */
  description: string
  /** How the default reads when the schema has no `default` value (e.g. 'a random UUID'). */
  defaultText?: string
  /** Said after the default value, e.g. '1 MiB'. */
  defaultNote?: string
}

/** A schema that fills in `D` when the option is absent (so the resolved options always hold it). */
type WithDefault<S extends TSchema> = S & { default: Static<S> }

function withDoc<S extends TSchema> (schema: S, doc: Doc & { default?: unknown }): S {
  return Object.assign(schema, doc)
}

/**
 * Node's timers take at most 2^31 - 1 ms and silently turn anything longer into 1 ms (a heartbeat
 * of 2^40 ms would drop every socket at once); no integer option needs more.
 */
const MAX_INTEGER_OPTION = 2 ** 31 - 1

/** Options that are whole numbers up to 2^31 - 1; `allowZero` where 0 means "off" or "none". */
export function integer (doc: Doc & { default: number, allowZero?: boolean }): WithDefault<ReturnType<typeof Type.Integer>>
export function integer (doc: Doc & { allowZero?: boolean }): ReturnType<typeof Type.Integer>
export function integer ({ allowZero = false, ...doc }: Doc & { default?: number, allowZero?: boolean }): ReturnType<typeof Type.Integer> {
  return withDoc(Type.Integer({
    minimum: allowZero ? 0 : 1,
    maximum: MAX_INTEGER_OPTION,
    expected: `a ${allowZero ? 'non-negative' : 'positive'} integer`
  }), doc)
}

export function boolean (doc: Doc & { default: boolean }): WithDefault<ReturnType<typeof Type.Boolean>> {
  return withDoc(Type.Boolean({ expected: 'true or false' }), doc) as WithDefault<ReturnType<typeof Type.Boolean>>
}

export function string (doc: Doc & { default: string, pattern?: RegExp, allowEmpty?: boolean, url?: boolean }): WithDefault<ReturnType<typeof Type.String>>
export function string (doc: Doc & { pattern?: RegExp, allowEmpty?: boolean, url?: boolean }): ReturnType<typeof Type.String>
/** `url`: a connection URL, shown with its password redacted when it is refused. */
export function string ({ pattern, allowEmpty = false, url = false, ...doc }: Doc & { default?: string, pattern?: RegExp, allowEmpty?: boolean, url?: boolean }): ReturnType<typeof Type.String> {
  return withDoc(Type.String({
    ...(url ? { shows: 'url' } : {}),
    ...(allowEmpty ? {} : { minLength: 1 }),
    ...(pattern === undefined ? {} : { pattern: pattern.source }),
    expected: `a${allowEmpty ? '' : ' non-empty'} string${pattern === undefined ? '' : ` matching ${String(pattern)}`}`
  }), doc)
}

/** A list of strings; each entry's own rule is the plugin's to check. */
export function stringList (doc: Doc & { default: string[], expected: string }): WithDefault<TArray<TString>> {
  const { expected, ...rest } = doc
  return withDoc(Type.Array(Type.String(), { expected }), rest) as WithDefault<TArray<TString>>
}

/** A function option: checked to be a function; its signature comes from `F`. */
export function func<F extends (...args: any[]) => unknown> (doc: Doc) {
  return withDoc(Type.Unsafe<F>({ ...Type.Function([], Type.Unknown()), expected: 'a function', shows: 'type' }), doc)
}

/** An object handed to a library as it is (ioredis options, a MemoryBus): only checked to be an object. */
export function opaqueObject<T> (doc: Doc & { expected?: string }) {
  return withDoc(Type.Unsafe<T>({ ...Type.Object({}, { additionalProperties: true }), expected: doc.expected ?? 'an object' }), doc)
}

/** A Redis connection: a URL or ioredis options (passed to ioredis as they are). */
export function redisConnection<T> (doc: Doc & { expected: string }) {
  const { expected, ...rest } = doc
  return withDoc(Type.Unsafe<string | T>({ ...Type.Union([Type.String({ minLength: 1 }), Type.Object({}, { additionalProperties: true })]), expected }), rest)
}

/**
 * A group of options: no unknown key. `$id` names a plugin's whole options (the docs link to
 * its table instead of listing them again); `default: {}` makes the group always present.
 */
export function group<P extends Record<string, TSchema>> (properties: P, doc: Doc & { default: Record<string, never>, $id?: string, example?: string }): TObject<P> & { default: Record<string, never> }
export function group<P extends Record<string, TSchema>> (properties: P, doc?: Doc & { $id?: string, example?: string }): TObject<P>
export function group<P extends Record<string, TSchema>> (properties: P, doc: Doc & { default?: Record<string, never>, $id?: string, example?: string } = { description: '' }): TObject<P> {
  return withDoc(Type.Object(properties, { additionalProperties: false, expected: 'an object' }), doc)
}

/** `schema` with docs of its own: another plugin's options (or one of them) as the umbrella hands them on. */
export function handedOn<S extends TSchema> (schema: S, doc: Doc & { default: Record<string, never> }): S & { default: Record<string, never> }
export function handedOn<S extends TSchema> (schema: S, doc: Doc): S
export function handedOn<S extends TSchema> (schema: S, doc: Doc & { default?: Record<string, never> }): S {
  return { ...schema, ...doc }
}

/** A group whose keys are checked (as opposed to an object handed on as it is). */
const isGroup = (schema: TSchema | undefined): schema is TObject =>
  schema !== undefined && schema[Kind] === 'Object' && schema.additionalProperties === false

/**
 * The umbrella's own level of `schema`: the `delegated` options (another plugin's options, or
 * one handed to another plugin) only have to be objects (or be absent, for a leaf) here; the
 * plugin they go to checks them at its registration and names itself in its errors.
 */
export function ownLevel (schema: TObject, delegated: readonly string[]): TObject {
  const loose = (property: TSchema): TSchema => {
    if (property[Kind] === 'Object' || property[Kind] === 'Intersect') {
      return Type.Object({}, { additionalProperties: true, expected: 'an object', example: property.example })
    }
    if (property[Kind] === 'Union') return Type.Union((property.anyOf as TSchema[]).map(loose), { expected: property.expected })
    if (property[Kind] === 'Literal') return property
    return Type.Optional(Type.Unknown())
  }
  const properties: Record<string, TSchema> = {}
  for (const [key, property] of Object.entries(schema.properties)) {
    const own = delegated.includes(key) ? loose(property) : property
    properties[key] = isOptional(property) ? Type.Optional(own) : own
  }
  return Type.Object(properties, { additionalProperties: false, expected: 'an object' })
}

/**
 * The options once defaults are applied: an option with a default is always there; a group
 * with a default (`{}`) is always there, with its own defaults applied.
 */
export type Resolved<T extends TObject> = Evaluate<
  { -readonly [K in keyof T['properties'] as T['properties'][K] extends { default: unknown } ? K : never]-?: ResolvedValue<T['properties'][K]> } &
  { -readonly [K in keyof T['properties'] as T['properties'][K] extends { default: unknown } ? never : T['properties'][K] extends TOptional<TSchema> ? K : never]?: ResolvedValue<T['properties'][K]> } &
  { -readonly [K in keyof T['properties'] as T['properties'][K] extends { default: unknown } ? never : T['properties'][K] extends TOptional<TSchema> ? never : K]: ResolvedValue<T['properties'][K]> }
>
type ResolvedValue<S> = S extends TObject ? Resolved<S> : S extends TSchema ? Static<S> : never
type Evaluate<T> = { [K in keyof T]: T[K] } & {}

/** The options as the integrator passes them: what is optional in the schema may be left out. */
export type OptionsOf<T extends TObject> = Static<T>

/**
 * Compiles the check of `schema` for the plugin `plugin`. The returned function throws an
 * OptionError (code ATLAS_ERR_OPTION, a TypeError) naming the first wrong option, and returns
 * the options with their defaults (a copy: the integrator's object is not changed).
 */
export function optionsChecker<T extends TObject> (
  plugin: string,
  schema: T,
  { delegated = [], path }: {
    /** Options another plugin checks (see ownLevel); their defaults are that plugin's to apply. */
    delegated?: ReadonlyArray<keyof T['properties'] & string>
    /** Where these options sit in the plugin's, for the messages (`websocket` gives `websocket.maxPayload`). */
    path?: string
  } = {}
): (options: unknown) => Resolved<T> {
  const checked = delegated.length === 0 ? schema : ownLevel(schema, delegated)
  const check = TypeCompiler.Compile(checked)
  return (options) => {
    if (typeof options !== 'object' || options === null) throw new OptionError(plugin, `options must be an object (got ${show(options)})`)
    const first = check.Errors(options).First()
    if (first !== undefined) throw new OptionError(plugin, describe(checked, options, first, path))
    return applyDefaults(schema, options, delegated) as Resolved<T>
  }
}

/** An option error of `plugin` for a rule no schema states (options that exclude each other). */
export function optionError (plugin: string, message: string): OptionError {
  return new OptionError(plugin, message)
}

function applyDefaults (schema: TObject, value: object, delegated: readonly string[] = []): Record<string, unknown> {
  const result: Record<string, unknown> = { ...value }
  for (const [key, property] of Object.entries(schema.properties)) {
    if (result[key] === undefined && 'default' in property) result[key] = structuredClone(property.default)
    if (isGroup(property) && !delegated.includes(key) && typeof result[key] === 'object' && result[key] !== null) {
      result[key] = applyDefaults(property, result[key] as object)
    }
  }
  return result
}

/**
 * The message of the first error: the option is the deepest one on the error's path that is
 * not a group (an array of origins is reported as a whole, not its item).
 */
function describe (root: TObject, options: object, error: ValueError, prefix?: string): string {
  const segments = error.path.split('/').slice(1).map((s) => s.replaceAll('~1', '/').replaceAll('~0', '~'))
  const path: string[] = prefix === undefined ? [] : [prefix]
  if (error.type === ValueErrorType.ObjectAdditionalProperties) {
    const parent = segments.slice(0, -1).reduce<TSchema>((schema, key) => (schema as TObject).properties[key], root) as TObject
    return `option ${[...path, ...segments].join('.')} is unknown (the options are ${Object.keys(parent.properties).join(', ')})`
  }
  let schema: TSchema = root
  let value: unknown = options
  let required = false
  for (const segment of segments) {
    if (!isGroup(schema) || typeof value !== 'object' || value === null) break
    required = (schema.required ?? []).includes(segment)
    schema = schema.properties[segment]
    value = (value as Record<string, unknown>)[segment]
    path.push(segment)
  }
  const name = path.join('.')
  if (schema[Kind] === 'Object') {
    return value === undefined ? `option ${name} is required${schema.example === undefined ? '' : `, e.g. ${String(schema.example)}`}` : `option ${name} must be an object`
  }
  const expected = error.type === ValueErrorType.NumberMaximum || error.type === ValueErrorType.IntegerMaximum
    ? `at most ${String(schema.maximum)}`
    : String(schema.expected ?? 'valid')
  // A connection URL may carry a password: shown redacted, like everywhere else.
  const got = schema.shows === 'type' ? typeof value : schema.shows === 'url' && typeof value === 'string' ? show(redactUrl(value)) : show(value)
  return `option ${name} must be ${expected}${required ? ' and is required' : ''} (got ${got})`
}

function show (value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return String(value)
  }
}

/** Whether `schema`'s property `key` is optional (for the docs). */
export function isOptional (schema: TSchema): boolean {
  return schema[OptionalKind] === 'Optional'
}
