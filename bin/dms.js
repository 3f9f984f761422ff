#!/usr/bin/env node
// The `dms` command. Runs the TypeScript sources through tsx's loader, so `npm ci` is the only
// set-up step (no build). The polyfill must load before any libp2p module.
import { register } from 'tsx/esm/api'

register()
await import('../src/lib/polyfill.ts')
const { main } = await import('../src/cli/main.ts')
await main(process.argv)
