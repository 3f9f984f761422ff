import { readFileSync, statSync, mkdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import ts from 'typescript'
import buildDist from '../e2e/global-setup.js'
import { DRIVER_JS, ROOT } from './procs.js'

/**
 * Global setup of the faults project: the drivers (test/faults/driver.ts) run from dist/, as the
 * e2e daemons do. A scenario starts a driver six times or more; through tsx each start compiled
 * the whole source tree again (5–6 s of CPU against 2 s from dist/, measured on this 2-core
 * machine), which the restarts of a fault scenario cannot afford. dist/ is rebuilt when the
 * sources are newer (the e2e setup), and the driver itself, which the build does not cover, is
 * transpiled beside it (one file, no type check: `npm run typecheck` checks it).
 */
const DRIVER_TS = join(ROOT, 'test/faults/driver.ts')

export default function setup (): void {
  buildDist()
  const stale = ((): boolean => { try { return statSync(DRIVER_JS).mtimeMs < statSync(DRIVER_TS).mtimeMs } catch { return true } })()
  if (!stale) return
  const out = ts.transpileModule(readFileSync(DRIVER_TS, 'utf8'), {
    fileName: DRIVER_TS,
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, verbatimModuleSyntax: true, sourceMap: false }
  })
  mkdirSync(dirname(DRIVER_JS), { recursive: true })
  writeFileSync(DRIVER_JS, out.outputText)
}
