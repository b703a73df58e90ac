// `npm run docs`: rewrites the generated regions of the docs (scripts/doc-tables.ts) and the
// API documents docs/asyncapi.json and docs/openapi.json (scripts/documents.ts).
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { generatedFiles } from './doc-tables.js'
import { generatedDocuments } from './documents.js'

// Run from dist/scripts/ (compiled) or scripts/ (as TypeScript): the package root holds package.json.
const here = fileURLToPath(new URL('.', import.meta.url))
const root = here.includes('/dist/') ? join(here, '../..') : join(here, '..')

for (const { file, current, expected } of [...generatedFiles(root), ...await generatedDocuments(root)]) {
  if (current === expected) continue
  writeFileSync(join(root, file), expected)
  console.log(`updated ${file}`)
}
