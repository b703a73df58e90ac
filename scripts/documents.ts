// The API documents `npm run docs` writes whole (the docs' tables are regions of hand-written
// files: scripts/doc-tables.ts). test/docs.test.ts compares the committed ones with these.
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { asyncApiDocument } from './asyncapi.js'
import { openApiDocument } from './openapi.js'
import type { Json } from './schema-refs.js'

export interface GeneratedDocument {
  /** The file, relative to the package root. */
  file: string
  build: () => Json | Promise<Json>
}

export const DOCUMENTS: GeneratedDocument[] = [
  { file: 'docs/asyncapi.json', build: asyncApiDocument },
  { file: 'docs/openapi.json', build: openApiDocument }
]

export function serialize (document: Json): string {
  return `${JSON.stringify(document, null, 2)}\n`
}

/** Each document: what its file holds now ('' when missing) and what it should hold. */
export async function generatedDocuments (root: string, documents: GeneratedDocument[] = DOCUMENTS): Promise<Array<{ file: string, current: string, expected: string }>> {
  return await Promise.all(documents.map(async ({ file, build }) => {
    const path = join(root, file)
    return { file, current: existsSync(path) ? readFileSync(path, 'utf8') : '', expected: serialize(await build()) }
  }))
}
