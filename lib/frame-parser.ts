import { TypeCompiler } from '@sinclair/typebox/compiler'
import { ErrorCode, isTeamId } from '../protocol/constants.js'
import { clientFrameSchemas, type ClientFrame } from '../protocol/schemas.js'

const clientFrameCheckers = {
  subscribe: TypeCompiler.Compile(clientFrameSchemas.subscribe),
  unsubscribe: TypeCompiler.Compile(clientFrameSchemas.unsubscribe),
  ping: TypeCompiler.Compile(clientFrameSchemas.ping),
  refresh: TypeCompiler.Compile(clientFrameSchemas.refresh)
}

export type ParsedFrame =
  | { ok: true, frame: ClientFrame }
  | { ok: false, code: ErrorCode, message: string }

/** Parses one text frame from a client; never throws. */
export function parseClientFrame (text: string): ParsedFrame {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return { ok: false, code: ErrorCode.INVALID_JSON, message: 'Frame is not valid JSON' }
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, code: ErrorCode.INVALID_FRAME, message: 'Frame must be a JSON object' }
  }
  const type = (value as { type?: unknown }).type
  if (typeof type !== 'string' || !Object.hasOwn(clientFrameCheckers, type)) {
    return { ok: false, code: ErrorCode.UNKNOWN_TYPE, message: `Unknown frame type ${JSON.stringify(type)?.slice(0, 80)}` }
  }
  const checker = clientFrameCheckers[type as keyof typeof clientFrameCheckers]
  if (!checker.Check(value)) {
    const first = checker.Errors(value).First()
    const where = first === undefined ? '' : ` at ${first.path || '/'}: ${first.message}`
    return { ok: false, code: ErrorCode.INVALID_FRAME, message: `Invalid ${type} frame${where}` }
  }
  return { ok: true, frame: value as ClientFrame }
}

/**
 * Parses the upgrade's query: `teams=a,b` narrows the subscription, `since=a:12,b:40` resumes.
 * Returns an error message instead of throwing.
 */
export function parseConnectQuery (query: { teams?: unknown, since?: unknown }):
  { ok: true, teams: string[] | undefined, since: Map<string, number> } | { ok: false, message: string } {
  let teams: string[] | undefined
  if (query.teams !== undefined) {
    if (typeof query.teams !== 'string') return { ok: false, message: 'teams must be given once, as a comma-separated list' }
    teams = [...new Set(query.teams.split(',').filter((t) => t !== ''))]
    const bad = teams.find((t): boolean => !isTeamId(t))
    if (bad !== undefined) return { ok: false, message: `Invalid team id ${JSON.stringify(bad.slice(0, 80))}` }
  }
  const since = new Map<string, number>()
  if (query.since !== undefined) {
    if (typeof query.since !== 'string') return { ok: false, message: 'since must be given once, as team:seq pairs separated by commas' }
    for (const pair of query.since.split(',').filter((p) => p !== '')) {
      const colon = pair.lastIndexOf(':')
      const team = pair.slice(0, colon)
      const seq = Number(pair.slice(colon + 1))
      if (colon <= 0 || !isTeamId(team) || !/^\d+$/.test(pair.slice(colon + 1)) || !Number.isSafeInteger(seq)) {
        return { ok: false, message: `Invalid since entry ${JSON.stringify(pair.slice(0, 80))}; expected team:seq` }
      }
      since.set(team, seq)
    }
  }
  return { ok: true, teams, since }
}
