// The named schemas of protocol/schemas.ts as components of a generated document. TypeBox
// composes by embedding (TaskListResponse holds TaskSchema itself), so written out as they are
// the documents would repeat the task in every frame and answer; here each named schema is
// written once, under its name, and referenced wherever it appears inside another.
import type { TSchema } from '@sinclair/typebox'

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json }
export type JsonObject = { [key: string]: Json }

/** Keywords whose values are data, not schemas: never replaced by a reference. */
const DATA_KEYWORDS = new Set(['const', 'enum', 'default', 'examples', 'example', 'required'])
/** Keywords whose values map names (not keywords) to schemas. */
const SCHEMA_MAPS = new Set(['properties', 'patternProperties', 'definitions', '$defs'])

/** A schema as plain JSON: TypeBox's symbol-keyed markers and `undefined` members dropped. */
export function plain (value: unknown): Json {
  return JSON.parse(JSON.stringify(value)) as Json
}

/** JSON with members sorted, so that two schemas of the same shape compare equal. */
function canonical (value: Json): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`
  if (value === null || typeof value !== 'object') return JSON.stringify(value)
  return `{${Object.keys(value).sort().map((key) => `${JSON.stringify(key)}:${canonical(value[key])}`).join(',')}}`
}

export class SchemaComponents {
  private readonly nameOf = new Map<string, string>()

  /**
   * @param named the components, by name
   * @param prefix where the document keeps them, e.g. '#/components/schemas/'
   */
  constructor (private readonly named: Readonly<Record<string, TSchema>>, private readonly prefix: string) {
    for (const [name, schema] of Object.entries(named)) {
      const shape = canonical(plain(schema))
      const other = this.nameOf.get(shape)
      if (other !== undefined) throw new Error(`schemas ${other} and ${name} have the same shape: a reference could not tell them apart`)
      this.nameOf.set(shape, name)
    }
  }

  /** The components: each named schema, with the named schemas inside it referenced. */
  components (): Record<string, Json> {
    return Object.fromEntries(Object.entries(this.named).map(([name, schema]) => [name, this.walk(plain(schema), true)]))
  }

  /** `schema` as plain JSON, without `$id`s, each named schema inside it referenced. */
  refer (schema: unknown): Json {
    return this.walk(plain(schema), true)
  }

  /** A reference to `schema` if it is a named one, else as `refer`. */
  reference (schema: unknown): Json {
    return this.walk(plain(schema), false)
  }

  /** The name of a named schema. */
  name (schema: TSchema): string {
    const name = this.nameOf.get(canonical(plain(schema)))
    if (name === undefined) throw new Error(`schema ${String(schema.description ?? schema.$id ?? '')} has no name among the components`)
    return name
  }

  private walk (node: Json, root: boolean): Json {
    if (Array.isArray(node)) return node.map((item) => this.walk(item, false))
    if (node === null || typeof node !== 'object') return node
    if (!root) {
      const name = this.nameOf.get(canonical(node))
      if (name !== undefined) return { $ref: `${this.prefix}${name}` }
    }
    const out: JsonObject = {}
    for (const [key, value] of Object.entries(node)) {
      // An $id would move the base URI of the references inside it.
      if (key === '$id') continue
      if (DATA_KEYWORDS.has(key)) out[key] = value
      else if (SCHEMA_MAPS.has(key) && value !== null && typeof value === 'object' && !Array.isArray(value)) {
        out[key] = Object.fromEntries(Object.entries(value).map(([member, schema]) => [member, this.walk(schema, false)]))
      } else out[key] = this.walk(value, false)
    }
    return out
  }
}
