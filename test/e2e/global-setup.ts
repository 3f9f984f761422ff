import { execFileSync } from 'node:child_process'
// @ts-expect-error plain JS module shared with bin/dms.js
import { buildIsFresh, root } from '../../bin/build-state.js'

/**
 * The e2e suites run the real `dms` command hundreds of times. From a fresh build a call takes
 * ~0.45 s; through tsx ~2 s. Build once before the suites if the sources are newer, so timings do
 * not change in the middle of a run.
 */
export default function setup (): void {
  if (!(buildIsFresh as () => boolean)()) execFileSync('npm', ['run', '-s', 'build'], { cwd: root as string, stdio: 'inherit' })
}
