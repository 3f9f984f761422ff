// Whether dist/ (from `npm run build`) is at least as new as every TypeScript source. Shared by
// bin/dms.js (run the build or the sources?) and the e2e global setup (rebuild first?).
import { readdirSync, statSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const root = join(dirname(fileURLToPath(import.meta.url)), '..')

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

export function buildIsFresh () {
  try {
    const built = statSync(join(root, 'dist/.built')).mtimeMs
    return built >= Math.max(newest(join(root, 'src')), newest(join(root, 'behaviors')), statSync(join(root, 'package.json')).mtimeMs)
  } catch {
    return false
  }
}
