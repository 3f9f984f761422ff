import { describe, expect, it } from 'vitest'
import { parseCores, parseDuration, parseSize } from '../../src/lib/units.js'

describe('units', () => {
  it('parses sizes in binary and decimal units', () => {
    expect(parseSize('512MiB')).toBe(512 * 2 ** 20)
    expect(parseSize('4GiB')).toBe(4 * 2 ** 30)
    expect(parseSize('20GB')).toBe(20e9)
    expect(parseSize('1024')).toBe(1024)
    expect(() => parseSize('12 parsecs')).toThrow(expect.objectContaining({ name: 'InvalidArgument' }))
    expect(() => parseSize('-1GiB')).toThrow(expect.objectContaining({ name: 'InvalidArgument' }))
  })
  it('parses fractional cores', () => {
    expect(parseCores('1.5')).toBe(1.5)
    expect(() => parseCores('lots')).toThrow(expect.objectContaining({ name: 'InvalidArgument' }))
  })
  it('parses durations', () => {
    expect(parseDuration('500ms')).toBe(500)
    expect(parseDuration('1h30m')).toBe(5_400_000)
    expect(parseDuration('7d')).toBe(7 * 86_400_000)
    expect(() => parseDuration('soon')).toThrow(expect.objectContaining({ name: 'InvalidArgument' }))
  })
})
