// The wire contract of Atlas Realtime: constants (dependency-free) and TypeBox schemas with the
// types derived from them. Imports nothing else of the project.
export * from './constants.js'
export * from './schemas.js'
export * from './errors.js'
