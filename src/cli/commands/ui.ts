import { spawn } from 'node:child_process'
import type { Command } from 'commander'
import { callBehavior, openSession } from '../call.js'
import { emit, globalsFrom, withCommon, type OutputOpts } from '../common.js'

interface UiOpts extends OutputOpts { dataDir?: string, context?: string, timeout?: string, open?: boolean }

/**
 * The program that opens a URL in the desktop's browser, or why there is none. Given the URL as
 * an argument (no shell): nothing in it is ever interpreted.
 */
function opener (platform = process.platform, env = process.env): { cmd: string, args: string[] } | string {
  if (platform === 'darwin') return { cmd: 'open', args: [] }
  if (platform === 'win32') return { cmd: 'explorer.exe', args: [] }
  if (env.DISPLAY === undefined && env.WAYLAND_DISPLAY === undefined) return 'no desktop here (neither DISPLAY nor WAYLAND_DISPLAY is set)'
  return { cmd: 'xdg-open', args: [] }
}

/** Tries to open `url`; resolves with why it could not, or undefined once the opener started. */
async function openInBrowser (url: string): Promise<string | undefined> {
  const o = opener()
  if (typeof o === 'string') return o
  return await new Promise(resolve => {
    const child = spawn(o.cmd, [...o.args, url], { stdio: 'ignore', detached: true })
    child.once('error', err => { resolve(`${o.cmd}: ${err.message}`) })
    child.once('spawn', () => { child.unref(); resolve(undefined) })
  })
}

/**
 * `dms ui [--open]`: a one-time login URL for the dashboard of the running daemon. Asking for it
 * needs the user key (the passphrase, or an unlock session), as any call does; the URL works
 * once, within minutes, and the browser keeps a session cookie instead (12 h).
 */
export function register (program: Command): void {
  withCommon(program.command('ui'))
    .description('print a one-time login URL for the web dashboard (with --open, open it in the browser)')
    .option('--open', 'open the URL in the desktop\'s browser as well')
    .addHelpText('after', '\nThe URL works once, within 5 minutes; the browser then keeps a session for 12 hours.\n\nExamples:\n  dms ui\n  dms ui --open')
    .action(async (o: UiOpts) => {
      const g = globalsFrom(o)
      const s = await openSession(g)
      const { token, expiry } = await callBehavior<{ token: string, expiry: string }>(g, '/dms/node/ui/token', {}, { session: s })
      const url = `${s.daemon.api}/?token=${token}`
      let opened: boolean | undefined
      if (o.open === true) {
        const why = await openInBrowser(url)
        opened = why === undefined
        if (why !== undefined) process.stderr.write(`could not open a browser: ${why}; open the URL yourself\n`)
      }
      emit(o, { url, expiry, ...(opened !== undefined ? { opened } : {}) }, v => `${v.url}\n(open it within 5 minutes; it works once)`)
    })
}
