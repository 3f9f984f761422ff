import { describe, expect, it } from 'vitest'
import { UI_MAX_SESSIONS, UI_MAX_TOKENS, createUiAuth } from '../../src/api/ui-auth.js'

/** The dashboard's logins with a hand-moved clock: one use per token, expiries, bounded tables. */
describe('ui auth (dashboard logins)', () => {
  const clock = (): { now: () => number, advance: (ms: number) => void } => {
    let t = 1_700_000_000_000
    return { now: () => t, advance: (ms) => { t += ms } }
  }

  it('trades a token once for a session that checks; the second trade fails', () => {
    const auth = createUiAuth()
    const { token, expiry } = auth.issueToken()
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/)
    expect(Date.parse(expiry)).toBeGreaterThan(Date.now())
    const s = auth.exchange(token)
    expect(s?.maxAgeS).toBe(12 * 3600)
    expect(auth.check(s!.session)).toBe(true)
    expect(auth.exchange(token)).toBeUndefined()
    // the session is not a token, nor the token a session
    expect(auth.exchange(s!.session)).toBeUndefined()
    expect(auth.check(token)).toBe(false)
    expect(auth.check(undefined)).toBe(false)
    expect(auth.check('')).toBe(false)
  })

  it('an expired token trades for nothing, and a session ends at its expiry', () => {
    const c = clock()
    const auth = createUiAuth({ now: c.now, tokenTtlMs: 1000, sessionTtlMs: 5000 })
    const late = auth.issueToken()
    c.advance(1000)
    expect(auth.exchange(late.token)).toBeUndefined()
    const s = auth.exchange(auth.issueToken().token)!
    c.advance(4999)
    expect(auth.check(s.session)).toBe(true)
    c.advance(1)
    expect(auth.check(s.session)).toBe(false)
    expect(auth.counts.sessions).toBe(0)
  })

  it('keeps at most UI_MAX_TOKENS tokens and UI_MAX_SESSIONS sessions, the oldest going first', () => {
    const auth = createUiAuth()
    const tokens = Array.from({ length: UI_MAX_TOKENS + 3 }, () => auth.issueToken().token)
    expect(auth.counts.tokens).toBe(UI_MAX_TOKENS)
    expect(auth.exchange(tokens[0])).toBeUndefined()
    expect(auth.exchange(tokens.at(-1)!)).toBeDefined()
    const sessions = Array.from({ length: UI_MAX_SESSIONS + 2 }, () => auth.exchange(auth.issueToken().token)!.session)
    expect(auth.counts.sessions).toBe(UI_MAX_SESSIONS)
    expect(auth.check(sessions[0])).toBe(false)
    expect(auth.check(sessions.at(-1))).toBe(true)
  })
})
