// One free-port finder for the tests and the benchmark (both start servers and redis-servers).
export { freePort } from '../../bench/processes.js'
