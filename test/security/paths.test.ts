import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { InvalidArgument } from '../../src/lib/errors.js'
import { assertPath, attenuates, covers, implies, isPath } from '../../src/security/paths.js'

// Few short segments, so that generated paths often share prefixes (and implications happen).
const segment = fc.constantFrom('dms', 'node', 'no', 'peers', 'list', 'a', 'b', 'nunet', 'hello', 'node2')
const path = fc.array(segment, { minLength: 0, maxLength: 5 }).map(s => s.length === 0 ? '/' : `/${s.join('/')}`)
const segs = (p: string): string[] => p === '/' ? [] : p.slice(1).split('/')

describe('capability paths', () => {
  it('covers itself and everything below, segment-wise', () => {
    expect(implies('/dms/node', '/dms/node/peers/list')).toBe(true)
    expect(implies('/dms/node', '/dms/node')).toBe(true)
    expect(implies('/', '/dms/node')).toBe(true)
    expect(implies('/dms/no', '/dms/node')).toBe(false)
    expect(implies('/dms/node/peers', '/dms/node')).toBe(false)
    expect(implies('/nunet', '/nunet/hello')).toBe(true)
    expect(implies('/nunet/hello', '/nunet')).toBe(false)
  })

  it('accepts well-formed paths only', () => {
    for (const ok of ['/', '/dms', '/dms/node/peers/list', '/public/x.y-z_1']) expect(isPath(ok)).toBe(true)
    for (const bad of ['', 'dms', '/dms/', '//dms', '/dms//node', '/a b', `/${'x'.repeat(600)}`, 7, null]) expect(isPath(bad)).toBe(false)
    expect(() => assertPath('/dms/')).toThrow(InvalidArgument)
  })

  it('covers and attenuates over sets', () => {
    expect(covers(['/dms/cap', '/dms/node'], '/dms/node/peers')).toBe(true)
    expect(covers([], '/dms')).toBe(false)
    expect(attenuates(['/dms'], ['/dms/node', '/dms/cap/list'])).toBe(true)
    expect(attenuates(['/dms/node'], ['/dms/node', '/dms/cap'])).toBe(false)
    expect(attenuates(['/dms'], [])).toBe(true)
  })

  it('property: implication is reflexive', () => {
    fc.assert(fc.property(path, p => implies(p, p)), { numRuns: 20_000 })
  })

  it('property: implication is transitive', () => {
    fc.assert(fc.property(path, path, path, (a, b, c) => !(implies(a, b) && implies(b, c)) || implies(a, c)), { numRuns: 20_000 })
  })

  it('property: implication is exactly "segments of the parent prefix those of the child"', () => {
    fc.assert(fc.property(path, path, (a, b) => {
      const sa = segs(a)
      const sb = segs(b)
      const prefix = sa.length <= sb.length && sa.every((s, i) => s === sb[i])
      return implies(a, b) === prefix
    }), { numRuns: 20_000 })
  })

  it('property: attenuation is transitive and never grants what the parent does not', () => {
    const set = fc.array(path, { maxLength: 4 })
    fc.assert(fc.property(set, set, path, (parent, child, probe) => {
      // Whatever the child covers, an attenuating child's parent covers too.
      return !attenuates(parent, child) || !covers(child, probe) || covers(parent, probe)
    }), { numRuns: 20_000 })
  })
})
