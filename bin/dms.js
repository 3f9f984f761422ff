#!/usr/bin/env node
// The `dms` command. Runs the compiled build in dist/ (made by `npm run build`, which `npm ci`
// runs through `prepare`) when it is at least as new as every source file; otherwise it runs the
// TypeScript sources through tsx, so a developer never runs stale code.
import { readdirSync, statSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')

function newest (dir, bound = 5000) {
  let t = 0
  const stack = [dir]
  for (let i = 0; i < bound && stack.length > 0; i++) {
    const d = stack.pop()
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name)
      if (e.isDirectory()) stack.push(p)
      else if (e.name.endsWith('.ts')) t = Math.max(t, statSync(p).mtimeMs)
    }
  }
  return t
}

function buildIsFresh () {
  try {
    const built = statSync(join(root, 'dist/.built')).mtimeMs
    return built >= Math.max(newest(join(root, 'src')), newest(join(root, 'behaviors')), statSync(join(root, 'package.json')).mtimeMs)
  } catch {
    return false
  }
}

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
