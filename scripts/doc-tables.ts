// The tables of the docs that restate code: written from the code by `npm run docs`
// (scripts/docs.ts) between marker comments, and compared with the committed files by
// test/docs.test.ts. Each table has one source: the error catalogue (protocol/errors.ts) and the
// constants it describes, and each plugin's options schema (plugins/*.ts).
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Kind, type TObject, type TSchema } from '@sinclair/typebox'
import { AtlasAuthOptionsSchema } from '../plugins/auth.js'
import { AtlasBrokerOptionsSchema } from '../plugins/broker.js'
import { AtlasHubOptionsSchema } from '../plugins/hub.js'
import { AtlasRealtimeOptionsSchema } from '../plugins/index.js'
import { AtlasRepositoryOptionsSchema } from '../plugins/repository.js'
import { AtlasTaskRoutesOptionsSchema } from '../plugins/task-routes.js'
import { AtlasWebSocketOptionsSchema } from '../plugins/websocket.js'
import { AtlasMetricsOptionsSchema } from '../plugins/metrics.js'
import { AtlasHealthOptionsSchema } from '../plugins/health.js'
import { AtlasOverloadOptionsSchema } from '../plugins/overload.js'
import { AtlasClientAssetsOptionsSchema } from '../plugins/client-assets.js'
import { AtlasOpsOptionsSchema } from '../plugins/ops.js'
import { CloseCode, ErrorCode } from '../protocol/constants.js'
import { CLOSE_CODES, FRAME_ERRORS, HTTP_ERRORS, NO_CLOSE_FRAME, UPGRADE_REFUSAL_ORDER, type CloseCodeEntry, type FrameErrorEntry } from '../protocol/errors.js'

/** A generated region of a committed file. */
export interface GeneratedRegion {
  /** The file, relative to the package root. */
  file: string
  /** The region's name in its markers. */
  name: string
  /** What goes between the markers. */
  render: () => string
}

// Every constant described, and nothing described that is not a constant: checked by the
// compiler here (the catalogue itself imports nothing) and again at run time below.
const frameErrors: { readonly [K in keyof typeof ErrorCode]: FrameErrorEntry } = FRAME_ERRORS
const closeCodes: { readonly [K in keyof typeof CloseCode]: CloseCodeEntry } = CLOSE_CODES

function sameKeys (what: string, described: object, defined: object): void {
  const missing = Object.keys(defined).filter((key) => !Object.hasOwn(described, key))
  const extra = Object.keys(described).filter((key) => !Object.hasOwn(defined, key))
  if (missing.length > 0 || extra.length > 0) {
    throw new Error(`protocol/errors.ts: ${what} out of step with protocol/constants.ts (undescribed: ${missing.join(', ') || 'none'}; unknown: ${extra.join(', ') || 'none'})`)
  }
}

function table (header: string[], rows: string[][]): string {
  const line = (cells: string[]): string => `| ${cells.map((cell) => cell.replaceAll('|', '\\|')).join(' | ')} |`
  return [line(header), `|${header.map(() => '---').join('|')}|`, ...rows.map(line)].join('\n')
}

export function httpErrorsTable (): string {
  return table(['Status', '`code`', 'Cause'], Object.entries(HTTP_ERRORS).map(([code, entry]) =>
    [`\`${entry.statusCode}\``, `\`${code}\``, entry.cause]))
}

export function upgradeRefusalsTable (): string {
  return table(['Status', '`code`', 'When'], UPGRADE_REFUSAL_ORDER.map((code) => {
    const entry = HTTP_ERRORS[code]
    return [`\`${entry.statusCode}\``, `\`${code}\``, entry.upgrade]
  }))
}

export function frameErrorsTable (): string {
  sameKeys('FRAME_ERRORS', frameErrors, ErrorCode)
  return table(['`code`', 'Cause', 'Counts as invalid'], Object.entries(frameErrors).map(([name, entry]) =>
    [`\`${ErrorCode[name as keyof typeof ErrorCode]}\``, entry.cause, entry.countsAsInvalid ? 'yes' : 'no']))
}

export function closeCodesTable (): string {
  sameKeys('CLOSE_CODES', closeCodes, CloseCode)
  const rows = Object.entries(closeCodes).map(([name, entry]) =>
    [`\`${CloseCode[name as keyof typeof CloseCode]}\` ${entry.label}`, entry.sentWhen, entry.clientAction])
  rows.push([NO_CLOSE_FRAME.label, NO_CLOSE_FRAME.sentWhen, NO_CLOSE_FRAME.clientAction])
  return table(['Code', 'Sent when', 'What the client should do'], rows)
}

/** The README's table of one plugin's options, from its schema. */
export function optionsTable (schema: TObject): string {
  const rows: string[][] = []
  const visit = (properties: Record<string, TSchema>, required: readonly string[], prefix: string): void => {
    for (const [key, property] of Object.entries(properties)) {
      const name = `${prefix}${key}`
      const nested = (member: TSchema): boolean => member[Kind] === 'Object' && member.additionalProperties === false && member.$id === undefined
      if (nested(property)) {
        visit((property as TObject).properties, (property as TObject).required ?? [], `${name}.`)
        continue
      }
      rows.push([`\`${name}\``, defaultOf(property, required.includes(key)), String(property.description ?? '')])
      for (const member of (property[Kind] === 'Intersect' ? property.allOf as TSchema[] : []).filter(nested)) {
        visit((member as TObject).properties, [], `${name}.`)
      }
    }
  }
  visit(schema.properties, schema.required ?? [], '')
  return table(['Option', 'Default', 'Meaning'], rows)
}

function defaultOf (property: TSchema, required: boolean): string {
  if (required) return '**required**'
  if (property.defaultText !== undefined) return String(property.defaultText)
  if (!('default' in property)) return 'unset'
  const value: unknown = property.default
  const shown = typeof value === 'string' ? `\`'${value}'\`` : `\`${JSON.stringify(value)}\``
  return property.defaultNote === undefined ? shown : `${shown} (${String(property.defaultNote)})`
}

const PLUGIN_OPTIONS: Array<[string, TObject]> = [
  ['atlasRealtime', AtlasRealtimeOptionsSchema],
  ['atlasRepository', AtlasRepositoryOptionsSchema],
  ['atlasBroker', AtlasBrokerOptionsSchema],
  ['atlasHub', AtlasHubOptionsSchema],
  ['atlasWebSocket', AtlasWebSocketOptionsSchema],
  ['atlasTaskRoutes', AtlasTaskRoutesOptionsSchema],
  ['atlasAuth', AtlasAuthOptionsSchema],
  ['atlasMetrics', AtlasMetricsOptionsSchema],
  ['atlasHealth', AtlasHealthOptionsSchema],
  ['atlasOverload', AtlasOverloadOptionsSchema],
  ['atlasClientAssets', AtlasClientAssetsOptionsSchema],
  ['atlasOps', AtlasOpsOptionsSchema]
]

export const REGIONS: GeneratedRegion[] = [
  ...PLUGIN_OPTIONS.map(([plugin, schema]): GeneratedRegion => ({ file: 'README.md', name: `options-${plugin}`, render: () => optionsTable(schema) })),
  { file: 'docs/protocol.md', name: 'upgrade-refusals', render: upgradeRefusalsTable },
  { file: 'docs/protocol.md', name: 'frame-errors', render: frameErrorsTable },
  { file: 'docs/protocol.md', name: 'close-codes', render: closeCodesTable },
  { file: 'docs/protocol.md', name: 'http-errors', render: httpErrorsTable }
]

const begin = (name: string): string => `<!-- generated:${name} (npm run docs) -->`
const end = (name: string): string => `<!-- /generated:${name} -->`

/** `text` with the region's content replaced; throws if its markers are missing. */
export function fillRegion (text: string, name: string, content: string): string {
  const start = text.indexOf(begin(name))
  const stop = text.indexOf(end(name))
  if (start === -1 || stop === -1 || stop < start) throw new Error(`markers ${begin(name)} … ${end(name)} not found`)
  return `${text.slice(0, start)}${begin(name)}\n${content}\n${text.slice(stop)}`
}

/** Each file holding generated regions: what it holds now and what it should hold. */
export function generatedFiles (root: string, regions: GeneratedRegion[] = REGIONS): Array<{ file: string, current: string, expected: string }> {
  const files = [...new Set(regions.map((region) => region.file))]
  return files.map((file) => {
    const current = readFileSync(join(root, file), 'utf8')
    const expected = regions.filter((region) => region.file === file)
      .reduce((text, region) => fillRegion(text, region.name, region.render()), current)
    return { file, current, expected }
  })
}
