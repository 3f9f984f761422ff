import { spawnSync } from 'node:child_process'
import { join, resolve } from 'node:path'
import { describe, expect, it } from 'vitest'

/**
 * src/lib/polyfill.ts supplies `Promise.withResolvers` (which libp2p 3 calls) on Node 20, and
 * must leave the runtime's own alone where there is one (Node 22 and later): CI runs this suite
 * on Node 20 and on Node 24 (specs/runtime.md).
 */
const ROOT = resolve(import.meta.dirname, '../..')
const POLYFILL = join(ROOT, 'src/lib/polyfill.ts')
const NATIVE = /\{\s*\[native code\]\s*\}\s*$/
const MAJOR = Number(process.versions.node.split('.')[0])

describe('Promise.withResolvers polyfill', () => {
  it('keeps the runtime\'s own where it has one (Node 22+), supplies one on Node 20', () => {
    // vitest's setupFiles evaluated the polyfill before this file.
    expect(typeof Promise.withResolvers).toBe('function')
    expect(NATIVE.test(Function.prototype.toString.call(Promise.withResolvers))).toBe(MAJOR >= 22)
  })

  it('supplies a working one where the runtime lacks it, on any Node', () => {
    // A fresh process without the native function, as on Node 20: the polyfill must fill it in,
    // and its promise must resolve and reject like the native one.
    const script = `
      delete Promise.withResolvers
      await import(${JSON.stringify(POLYFILL)})
      const ok = Promise.withResolvers(); ok.resolve(42)
      const bad = Promise.withResolvers(); bad.reject(new Error('no'))
      const out = { native: /\\[native code\\]/.test(String(Promise.withResolvers)), value: await ok.promise, reason: await bad.promise.catch(e => e.message) }
      process.stdout.write(JSON.stringify(out))
    `
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 })
    expect(r.stderr).toBe('')
    expect(r.status).toBe(0)
    expect(JSON.parse(r.stdout)).toEqual({ native: false, value: 42, reason: 'no' })
  })
})
