import { existsSync, readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import semver from 'semver'
import { describe, expect, it } from 'vitest'

/**
 * The Node versions dms supports are the ones package.json's `engines` names (README, "Node
 * versions"; specs/runtime.md). `npm ci` on any of them must print no EBADENGINE warning caused by
 * the project's own choice of dependencies: each dependency's `engines` must accept every
 * supported line, except a dependency whose declaration is stricter than its code needs, which
 * the README names. CI runs this suite on Node 20 and on Node 24.
 */
const ROOT = resolve(import.meta.dirname, '..')

/**
 * Dependencies whose own `engines` is stricter than their code needs, with the Node majors on
 * which npm therefore warns. Each is named, with the reason, in the README ("Node versions").
 * - p-retry 8 (through libp2p) declares node >=22, but uses nothing Node 20.19 lacks: it is
 *   exercised by libp2p's reconnect queue, and the whole suite passes on Node 20.
 */
const STRICTER_THAN_NEEDED: Record<string, number[]> = { 'p-retry': [20] }

interface Manifest { name?: string, version?: string, engines?: { node?: string } }
const readJson = <T>(path: string): T => JSON.parse(readFileSync(path, 'utf8')) as T

const own = readJson<Manifest>(join(ROOT, 'package.json'))
const range = own.engines?.node ?? ''
/** The lowest version of each supported line: `^20.19.0 || ^22.12.0 || ^24.0.0` → 20.19.0, 22.12.0, 24.0.0. */
const lowest = range.split('||').map(part => semver.minVersion(part.trim())?.version ?? `unparsable: ${part}`)

/** What `npm ci` installed here (the lock's entries present on disk; others are for other platforms). */
function installed (): Manifest[] {
  const lock = readJson<{ packages: Record<string, { link?: boolean }> }>(join(ROOT, 'package-lock.json'))
  return Object.entries(lock.packages)
    .filter(([path, entry]) => path !== '' && entry.link !== true && existsSync(join(ROOT, path, 'package.json')))
    .map(([path]) => readJson<Manifest>(join(ROOT, path, 'package.json')))
}

describe('supported Node versions', () => {
  it('engines names Node 20.19+, 22 and 24, and accepts the Node running this suite', () => {
    expect(lowest.map(v => semver.major(v))).toEqual([20, 22, 24])
    expect(semver.satisfies(process.version, range), `Node ${process.version} is outside engines "${range}"`).toBe(true)
  })

  it('every installed dependency accepts every supported line, except those the README names', () => {
    const deps = installed()
    expect(deps.length).toBeGreaterThan(100)
    const offenders: string[] = []
    for (const dep of deps) {
      const wants = dep.engines?.node
      if (wants === undefined) continue
      for (const v of [...lowest, process.versions.node]) {
        // As npm's own check (npm-install-checks): prereleases count.
        if (semver.satisfies(v, wants, { includePrerelease: true })) continue
        if (STRICTER_THAN_NEEDED[dep.name ?? '']?.includes(semver.major(v)) === true) continue
        offenders.push(`${dep.name ?? '?'}@${dep.version ?? '?'} declares node "${wants}", which excludes ${v}`)
      }
    }
    expect([...new Set(offenders)]).toEqual([])
  })

  it('each dependency the README excuses is installed and still declares what it excuses', () => {
    const deps = installed()
    for (const [name, majors] of Object.entries(STRICTER_THAN_NEEDED)) {
      const dep = deps.find(d => d.name === name)
      expect(dep, `${name} is no longer installed: drop it from the README and from this list`).toBeDefined()
      for (const major of majors) {
        const v = lowest.find(l => semver.major(l) === major) ?? `${major}.0.0`
        expect(semver.satisfies(v, dep?.engines?.node ?? '*', { includePrerelease: true }), `${name} now accepts Node ${major}: drop it from the README and from this list`).toBe(false)
      }
    }
  })
})
