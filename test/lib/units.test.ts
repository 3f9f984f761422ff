import { describe, expect, it } from 'vitest'
import { parseCores, parseDuration, parseSize } from '../../src/lib/units.js'

describe('units', () => {
  it('parses sizes in binary and decimal units', () => {
    expect(parseSize('512MiB')).toBe(512 * 2 ** 20)
    expect(parseSize('4GiB')).toBe(4 * 2 ** 30)
    expect(parseSize('20GB')).toBe(20e9)
    expect(parseSize('1024B')).toBe(1024)
    expect(parseSize('0')).toBe(0)
    // a bare number is refused: `--ram 1.5` meant GiB, not 1 byte
    expect(() => parseSize('1.5', '--ram')).toThrow(expect.objectContaining({ name: 'InvalidArgument', message: expect.stringMatching(/^--ram 1.5 needs a unit/) }))
    expect(() => parseSize('1.5B')).toThrow(expect.objectContaining({ name: 'InvalidArgument' }))
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
    expect(() => parseDuration('3600', '--duration')).toThrow(expect.objectContaining({ name: 'InvalidArgument', message: expect.stringMatching(/^--duration 3600 needs a unit/) }))
    expect(() => parseDuration('soon')).toThrow(expect.objectContaining({ name: 'InvalidArgument' }))
  })
})
