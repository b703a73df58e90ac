/**
 * Atlas Realtime client SDK: runs in browsers and in Node 20+ (where it loads `ws` lazily).
 * No server code is imported here, so the compiled files can be served to a page as they are.
 */
export { AtlasClient, type AtlasClientEvents, type AtlasClientOptions, type Snapshot, type SnapshotReason } from './client.js'
export { TaskStore, type MutationKind, type MutationOutcome, type PersistOptions, type TaskConflict, type TaskStoreEvents, type TaskStoreOptions } from './task-store.js'
export { MemoryStorage, defaultQueueStorage, type QueueStorage } from './queue-storage.js'
export { RealtimeConnection, type CloseVerdict, type ConnectionEvents, type ConnectionOptions, type ConnectionState, type DisconnectInfo, type HeartbeatOptions, type ReconnectInfo } from './connection.js'
export { TaskApi, AtlasApiError, type MutationOptions, type MutationResponse, type TaskApiOptions, type TaskPage } from './http.js'
export { AtlasClientError, type AtlasClientErrorCode } from './errors.js'
export { refreshDelay, type CredentialOptions, type GetToken } from './credentials.js'
export { Backoff, backoffDelay, type BackoffOptions } from './backoff.js'
export { Emitter, type Listener } from './emitter.js'
export { parseServerFrame, isTaskEvent } from './frames.js'
export { BEARER_SUBPROTOCOL_PREFIX, CloseCode, ErrorCode, PROTOCOL_VERSION, SUBPROTOCOL, type ResyncReason, type TaskField, type TaskStatus } from '../protocol/constants.js'
export { newMutationId } from './ids.js'
export type { WebSocketConstructor, WebSocketLike, WebSocketUpgradeOptions } from './socket.js'
export type { ClientFrame, ServerFrame, Task, TaskCreatedEvent, TaskDeletedEvent, TaskEvent, TaskInput, TaskPatch, TaskUpdatedEvent } from '../protocol/schemas.js'
