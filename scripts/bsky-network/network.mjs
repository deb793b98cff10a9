// The reference AT Protocol network, local and offline: a PLC directory, a PDS and the `bsky`
// AppView (with its bsync and ozone companions), as `@atproto/dev-env` assembles them for the
// protocol's own tests, in this one process.
//
//   node network.mjs --db-url postgres://... --pds-port N --appview-port N --plc-port N \
//     --ready-file PATH
//
// The AppView and its companions keep their tables in schemas of the database given (wipe it
// before a start: the PLC directory is in memory, so the DIDs of an earlier run are gone). The
// PDS keeps repositories and blobs under $TMPDIR. When everything answers, the ready file is
// written: {"pds": URL, "appview": URL, "plc": URL, "ready_ms": N} (the services log to stdout
// with LOG_ENABLED=true). SIGTERM closes it all.
import { writeFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { TestNetwork } from '@atproto/dev-env'

const { values: args } = parseArgs({
  options: {
    'db-url': { type: 'string' },
    'pds-port': { type: 'string' },
    'appview-port': { type: 'string' },
    'plc-port': { type: 'string' },
    'ready-file': { type: 'string' },
  },
})
for (const name of ['db-url', 'pds-port', 'appview-port', 'plc-port', 'ready-file']) {
  if (!args[name]) {
    console.error(`missing --${name}`)
    process.exit(2)
  }
}

// The AppView only asserts that a Redis host is named; nothing here connects to one.
process.env.REDIS_HOST ??= 'unused'
const started = Date.now()
const network = await TestNetwork.create({
  dbPostgresUrl: args['db-url'],
  dbPostgresSchema: 'chimera',
  pds: { port: Number(args['pds-port']), hostname: 'localhost' },
  bsky: { port: Number(args['appview-port']) },
  plc: { port: Number(args['plc-port']) },
})
const ready = {
  pds: network.pds.url,
  appview: network.bsky.url,
  plc: network.plc.url,
  ready_ms: Date.now() - started,
}
writeFileSync(args['ready-file'], JSON.stringify(ready) + '\n')
console.error(`ready: ${JSON.stringify(ready)}`)

let closing = false
const close = async () => {
  if (closing) return
  closing = true
  await network.close()
  process.exit(0)
}
process.on('SIGTERM', close)
process.on('SIGINT', close)
