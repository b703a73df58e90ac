// `atlas-realtime/client`: the client SDK, which is its own package, atlas-realtime-client
// (client/, a workspace of this repository), so that a browser or client-only project installs
// it without the server. This entry re-exports it for apps that have the server package anyway:
// one copy of the SDK, whichever name imports it.
export * from 'atlas-realtime-client'
