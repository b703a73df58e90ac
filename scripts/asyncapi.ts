// docs/asyncapi.json: the WebSocket channel as an AsyncAPI 3.0 document, written by
// `npm run docs` from the wire contract alone: the frames' payloads are the TypeBox schemas of
// protocol/schemas.ts (JSON Schema already), the close codes, error codes and upgrade refusals
// come from the error catalogue, the version from PROTOCOL_VERSION. The document describes the
// server: it receives the client frames and sends the others.
import type { TSchema } from '@sinclair/typebox'
import { AtlasWebSocketOptionsSchema, RECOMMENDED_MAX_PAYLOAD } from '../plugins/websocket.js'
import { CloseCode, ErrorCode, PROTOCOL_VERSION, TEAM_ID_PATTERN } from '../protocol/constants.js'
import { CLOSE_CODES, FRAME_ERRORS, HTTP_ERRORS, NO_CLOSE_FRAME, UPGRADE_REFUSAL_ORDER } from '../protocol/errors.js'
import {
  ClientFrame, clientFrameSchemas, ErrorFrame, PingFrame, PongFrame, RefreshFrame, RefreshedFrame, ResyncFrame, ServerControlFrame, ServerFrame, serverFrameSchemas,
  SubscribedFrame, SubscribeFrame, TaskCreatedEvent, TaskDeletedEvent, TaskEvent, TaskSchema, TaskUpdatedEvent, TeamId,
  UnsubscribedFrame, UnsubscribeFrame, WelcomeFrame
} from '../protocol/schemas.js'
import { closeCodesTable, frameErrorsTable, upgradeRefusalsTable } from './doc-tables.js'
import { SchemaComponents, type Json, type JsonObject } from './schema-refs.js'

type ClientFrameType = keyof typeof clientFrameSchemas
type ServerFrameType = keyof typeof serverFrameSchemas

const CHANNEL = 'realtime'

const components = new SchemaComponents({
  Task: TaskSchema,
  TeamId,
  SubscribeFrame,
  UnsubscribeFrame,
  PingFrame,
  RefreshFrame,
  ClientFrame,
  WelcomeFrame,
  SubscribedFrame,
  ResyncFrame,
  UnsubscribedFrame,
  RefreshedFrame,
  ErrorFrame,
  PongFrame,
  TaskCreatedEvent,
  TaskUpdatedEvent,
  TaskDeletedEvent,
  TaskEvent,
  ServerControlFrame,
  ServerFrame
}, '#/components/schemas/')

/** What the server answers each client frame with (besides `error` frames, which answer any). */
const REPLIES: Record<ClientFrameType, ServerFrameType[]> = {
  subscribe: ['subscribed', 'resync', 'error'],
  unsubscribe: ['unsubscribed', 'error'],
  ping: ['pong', 'error'],
  refresh: ['refreshed', 'unsubscribed', 'error']
}

/** `task.created` -> `taskCreated`: a key AsyncAPI accepts everywhere. */
function messageId (type: string): string {
  return type.replace(/[._-](\w)/g, (_match, letter: string) => letter.toUpperCase())
}

function capitalized (text: string): string {
  return `${text.charAt(0).toUpperCase()}${text.slice(1)}`
}

const channelRef = { $ref: `#/channels/${CHANNEL}` }
const channelMessageRef = (type: string): Json => ({ $ref: `#/channels/${CHANNEL}/messages/${messageId(type)}` })

function message (type: string, schema: TSchema, extra: JsonObject = {}): Json {
  return {
    name: type,
    title: type,
    summary: String(schema.description),
    contentType: 'application/json',
    payload: { $ref: `#/components/schemas/${components.name(schema)}` },
    ...extra
  }
}

// The error frame's codes and the close codes, as data for tools (x-) and as the docs' tables
// for people (descriptions are CommonMark).
const errorCodes: Json = Object.entries(FRAME_ERRORS).map(([name, entry]) => ({
  code: ErrorCode[name as keyof typeof ErrorCode],
  name,
  cause: entry.cause,
  countsAsInvalid: entry.countsAsInvalid
}))

const closeCodes: Json = [
  ...Object.entries(CLOSE_CODES).map(([name, entry]) => ({ code: CloseCode[name as keyof typeof CloseCode], name, ...entry })),
  { code: 1006, name: 'NO_CLOSE_FRAME', ...NO_CLOSE_FRAME }
]

const upgradeRefusals: Json = UPGRADE_REFUSAL_ORDER.map((code) => ({ status: HTTP_ERRORS[code].statusCode, code, when: HTTP_ERRORS[code].upgrade }))

const path = String(AtlasWebSocketOptionsSchema.properties.path.default)

const queryParameters: JsonObject = {
  access_token: {
    type: 'string',
    description: 'The credential, when it is not sent as `Authorization: Bearer` (browsers cannot set headers on a WebSocket); the header wins when both are given. At most once. Taken out of the URL before anything routes or logs it, and accepted only on this upgrade.'
  },
  teams: {
    type: 'string',
    description: `Comma-separated team ids to subscribe to at once, each matching \`${TEAM_ID_PATTERN}\` and one of the principal's teams. Absent: all of the principal's teams; empty (\`teams=\`): none. Empty entries are skipped, duplicates removed. At most once.`,
    examples: ['red,blue']
  },
  since: {
    type: 'string',
    description: 'Resume: comma-separated `team:seq` pairs, `seq` being the last seq the client holds for the team. A subscribed team without a pair starts from now (no replay); pairs of other teams are ignored; of a repeated team the last pair wins. At most once.',
    examples: ['red:12,blue:40']
  }
}

export function asyncApiDocument (): Json {
  const messages: JsonObject = {}
  const operations: JsonObject = {}
  for (const [type, schema] of Object.entries(clientFrameSchemas) as Array<[ClientFrameType, TSchema]>) {
    messages[messageId(type)] = message(type, schema)
    operations[`receive${capitalized(messageId(type))}`] = {
      action: 'receive',
      channel: channelRef,
      title: `Client sends ${type}`,
      summary: String(schema.description),
      messages: [channelMessageRef(type)],
      reply: { channel: channelRef, messages: REPLIES[type].map(channelMessageRef) }
    }
  }
  for (const [type, schema] of Object.entries(serverFrameSchemas) as Array<[ServerFrameType, TSchema]>) {
    const extra: JsonObject = type === 'error'
      ? { description: `The codes:\n\n${frameErrorsTable()}`, 'x-error-codes': errorCodes }
      : {}
    messages[messageId(type)] = message(type, schema, extra)
    operations[`send${capitalized(messageId(type))}`] = {
      action: 'send',
      channel: channelRef,
      title: `Server sends ${type}`,
      summary: String(schema.description),
      messages: [channelMessageRef(type)]
    }
  }

  return {
    asyncapi: '3.0.0',
    info: {
      title: 'Atlas Realtime WebSocket protocol',
      version: String(PROTOCOL_VERSION),
      description: [
        `Version ${PROTOCOL_VERSION} of the wire protocol (the \`protocol\` member of \`welcome\`). One WebSocket per client carries the events of the client's teams in \`seq\` order; a client that reconnects says the last \`seq\` it holds and receives the rest from the team's event log.`,
        'Every frame, both ways, is a text frame holding one JSON object with a string member `type`. Client frames are validated strictly (unknown members refused); clients should ignore members and frame types they do not know.',
        'Generated by `npm run docs` from protocol/; docs/protocol.md has the prose (ordering guarantees, heartbeats, the client algorithm) and openapi.json the HTTP task API.'
      ].join('\n\n'),
      license: { name: 'MIT' }
    },
    defaultContentType: 'application/json',
    servers: {
      local: {
        host: 'localhost:3000',
        protocol: 'ws',
        title: 'The example server',
        description: 'The example Atlas API as `npm start` runs it.',
        security: [{ $ref: '#/components/securitySchemes/bearer' }, { $ref: '#/components/securitySchemes/accessToken' }]
      },
      tls: {
        host: '{host}',
        protocol: 'wss',
        title: 'Behind TLS',
        description: 'A deployment behind a TLS-terminating proxy.',
        variables: { host: { default: 'localhost:443', description: 'Host (and port) of the deployment.' } },
        security: [{ $ref: '#/components/securitySchemes/bearer' }, { $ref: '#/components/securitySchemes/accessToken' }]
      }
    },
    channels: {
      [CHANNEL]: {
        address: path,
        title: 'Realtime',
        summary: 'A team\'s task events in seq order, resumable, over one WebSocket per client.',
        description: [
          `Connect with \`GET ${path}?access_token=TOKEN&teams=red,blue&since=red:12,blue:40\` (all parameters optional but the credential when it is not a header). The path is the host's configuration (\`${path}\` by default). No subprotocol, no compression. Client frames are at most ${RECOMMENDED_MAX_PAYLOAD / 1024} KiB by default (larger: close 1009).`,
          `## A refused upgrade\n\nA plain HTTP answer with the error body of the HTTP API; no socket opens. The checks run in this order:\n\n${upgradeRefusalsTable()}`,
          `## Close codes\n\n${closeCodesTable()}`
        ].join('\n\n'),
        messages: Object.fromEntries(Object.keys(messages).map((id) => [id, { $ref: `#/components/messages/${id}` }])),
        bindings: {
          ws: {
            method: 'GET',
            query: { type: 'object', properties: queryParameters },
            headers: {
              type: 'object',
              properties: {
                Authorization: { type: 'string', description: '`Bearer <token>`: the credential, preferred to `access_token` where the client can set headers.' }
              }
            },
            bindingVersion: '0.1.0'
          }
        },
        'x-upgrade-refusals': upgradeRefusals,
        'x-close-codes': closeCodes
      }
    },
    operations,
    components: {
      schemas: components.components(),
      messages,
      securitySchemes: {
        bearer: {
          type: 'http',
          scheme: 'bearer',
          bearerFormat: 'JWT',
          description: '`Authorization: Bearer <token>` on the upgrade request. What a credential is, is the host\'s choice; the example takes an HS256 JWT with `sub`, `teams` and an `exp` at most 24 h after `iat`. Checked once, at the upgrade: the socket is closed with 4001 when the credential expires.'
        },
        accessToken: {
          type: 'httpApiKey',
          name: 'access_token',
          in: 'query',
          description: 'The same credential as the `access_token` query parameter, for clients that cannot set headers (browsers).'
        }
      }
    }
  }
}
