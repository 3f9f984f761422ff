import { PassThrough } from 'node:stream'
import { describe, expect, it } from 'vitest'
import { progress } from '../../src/cli/progress.js'

/** A stream that says it is (or is not) a terminal, collecting what is written to it. */
function stream (tty: boolean): { s: NodeJS.WriteStream, text: () => string } {
  const s = new PassThrough() as unknown as NodeJS.WriteStream & PassThrough
  Object.defineProperty(s, 'isTTY', { value: tty })
  let out = ''
  s.on('data', (b: Buffer) => { out += b.toString() })
  return { s, text: () => out }
}
const tick = async (): Promise<void> => { await new Promise(resolve => setImmediate(resolve)) }

describe('progress on stderr', () => {
  it('is one plain line per step when not on a terminal, nothing redrawn', async () => {
    const { s, text } = stream(false)
    const p = progress(s)
    p.step('Preparing: collecting bids')
    p.step('Running: every allocation started')
    p.done()
    await tick()
    expect(text()).toBe('Preparing: collecting bids\nRunning: every allocation started\n')
  })

  it('says nothing off a terminal when asked to (a short wait whose outcome is the only news)', async () => {
    const { s, text } = stream(false)
    const p = progress(s, { terminalOnly: true })
    p.step('starting the daemon')
    p.done()
    await tick()
    expect(text()).toBe('')
  })

  it('is a spinner beside the current step on a terminal, each finished step left as a line', async () => {
    const { s, text } = stream(true)
    const p = progress(s)
    p.step('Preparing: collecting bids')
    // the spinner redraws the current step in place until the next step
    await new Promise(resolve => setTimeout(resolve, 200))
    p.step('Running: every allocation started')
    p.done('Running: every allocation started (done)')
    await tick()
    const out = text()
    expect(out).toMatch(/\r\x1b\[2K⠋ Preparing: collecting bids/)
    expect(out).toMatch(/\r\x1b\[2K⠙ Preparing: collecting bids/)
    expect(out).toContain('\r\x1b[2KPreparing: collecting bids\n')
    expect(out.endsWith('\r\x1b[2KRunning: every allocation started (done)\n')).toBe(true)
    // nothing is drawn after done
    const before = out.length
    await new Promise(resolve => setTimeout(resolve, 200))
    expect(text().length).toBe(before)
  })
})
