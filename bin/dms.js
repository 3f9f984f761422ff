#!/usr/bin/env -S node --max-semi-space-size=1
// The `dms` command. Runs the compiled build in dist/ (made by `npm run build`, which `npm ci`
// runs through `prepare`) when it is at least as new as every source file; otherwise it runs the
// TypeScript sources through tsx, so a developer never runs stale code.
//
// --max-semi-space-size=1 (MiB): V8's young generation otherwise grows to 2 × 16 MiB, ~30 MB of
// a daemon's idle memory that garbage only passes through (issue 10: one idle daemon's RSS
// 126 → 97 MB, its private part ~53 MB; specs/runtime.md). Flags of the heap's shape work only
// on node's command line (v8.setFlagsFromString is too late), hence here; `dms run --detach`
// passes them on (process.execArgv). `node bin/dms.js …` runs without them.
import { buildIsFresh } from './build-state.js'

if (process.env.DMS_FROM_SOURCE !== '1' && buildIsFresh()) {
  await import('../dist/src/lib/polyfill.js')
  const { main } = await import('../dist/src/cli/main.js')
  await main(process.argv)
} else {
  const { register } = await import('tsx/esm/api')
  register()
  await import('../src/lib/polyfill.ts')
  const { main } = await import('../src/cli/main.ts')
  await main(process.argv)
}
