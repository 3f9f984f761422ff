import { describe, expect, it } from 'vitest'
import { childEnv, FALLBACK_PATH } from '../../src/lib/child-env.js'

describe('childEnv: the environment a child of the daemon gets', () => {
  const parent = { PATH: '/opt/x/bin:/usr/bin', HOME: '/root', DMS_PASSPHRASE: 'secret', DMS_HOME: '/d', AWS_SECRET_ACCESS_KEY: 'k', LANG: 'de_DE.UTF-8' }

  it('is PATH and the C locale, nothing else inherited', () => {
    expect(childEnv(parent)).toEqual({ PATH: '/opt/x/bin:/usr/bin', LANG: 'C', LC_ALL: 'C' })
  })

  it('falls back to the system PATH when the parent has none', () => {
    expect(childEnv({}).PATH).toBe(FALLBACK_PATH)
    expect(childEnv({ PATH: '' }).PATH).toBe(FALLBACK_PATH)
  })

  it('copies only the names asked for, and sets given variables', () => {
    expect(childEnv(parent, { keep: ['HOME', 'TMPDIR'], set: { WORKLOAD: '1' } })).toEqual({ PATH: '/opt/x/bin:/usr/bin', LANG: 'C', LC_ALL: 'C', HOME: '/root', WORKLOAD: '1' })
  })

  it('refuses DMS_* variables by name, whether kept or set (InvalidArgument, not a silent drop)', () => {
    expect(() => childEnv(parent, { keep: ['DMS_PASSPHRASE'] })).toThrow(expect.objectContaining({ name: 'InvalidArgument', code: 'INVALID_ARGUMENT' }))
    expect(() => childEnv(parent, { set: { dms_home: '/x' } })).toThrow(expect.objectContaining({ name: 'InvalidArgument' }))
  })
})
