#!/usr/bin/env node
// The `dms` command. Runs the compiled build in dist/ (made by `npm run build`, which `npm ci`
// runs through `prepare`) when it is at least as new as every source file; otherwise it runs the
// TypeScript sources through tsx, so a developer never runs stale code.
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
