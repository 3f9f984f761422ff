// `npm run build`: compiles to dist/ and stamps dist/.built with the time the build *started*.
// bin/build-state.js takes dist/ as fresh while the stamp is at least as new as every source; a
// source saved while tsc ran is newer than the start, so the next run rebuilds instead of
// running output compiled before the change.
import { execFileSync } from 'node:child_process'
import { utimesSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'

const started = new Date()
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')
execFileSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { stdio: 'inherit' })
writeFileSync('dist/.built', started.toISOString())
utimesSync('dist/.built', started, started)
