import type { Command } from 'commander'
import { readDaemonInfo } from '../../api/client.js'
import { isDmsError } from '../../lib/errors.js'
import { formatDuration, parseDuration } from '../../lib/units.js'
import { createRevocation } from '../../security/revocations.js'
import { tokenId } from '../../security/ucan.js'
import { callBehavior, loadIdentity, openSession } from '../call.js'
import { ago, emit, globalsFrom, green, withOutput, type OutputOpts } from '../common.js'
import { createSession, deleteSession, readSession, sessionPath } from '../session.js'

interface Opts extends OutputOpts { dataDir?: string, context?: string, for?: string, timeout?: string }

/** `dms unlock [--for 8h]` and `dms lock`. */
export function register (program: Command): void {
  const common = (cmd: Command): Command => withOutput(cmd
    .option('--data-dir <dir>', 'data directory (default: $DMS_HOME or ~/.dms)')
    .option('--context <context>', 'key context', 'user')
    .option('--timeout <duration>', 'deadline for calls to the daemon (e.g. 5s)', '30s'))

  common(program.command('unlock'))
    .description('type the passphrase once: make a short-lived session key the context\'s key delegates to (a UCAN expiring with it); commands sign with it until it expires or dms lock')
    .option('--for <duration>', 'how long the session lasts (e.g. 30m, 8h; at most 7d)', '8h')
    .addHelpText('after', '\nNeeds: the passphrase of the --context key (DMS_PASSPHRASE or a prompt). The session key is kept in\n<data-dir>/sessions/<context>.json, mode 0600; the context\'s own key stays encrypted. Tokens others\ngranted the context are not passed on: calls that need them still ask for the passphrase.')
    .action(async (o: Opts) => {
      const g = globalsFrom(o)
      const forMs = parseDuration(o.for ?? '8h', '--for')
      const s = await createSession(g.dataDir, g.context, await loadIdentity(g), forMs)
      emit(o, { context: g.context, did: s.identity.did, tokenId: tokenId(s.token), expiry: s.expiry, path: sessionPath(g.dataDir, g.context) },
        v => `${green('unlocked')} '${v.context}' for ${formatDuration(forMs)}: until ${ago(v.expiry)}\nsession key ${v.did}`)
    })

  common(program.command('lock'))
    .description('end the unlock session: revoke its token on the local daemon (spread to every node when DMS_PASSPHRASE is set) and delete the session key')
    .action(async (o: Opts) => {
      const g = globalsFrom(o)
      const s = await readSession(g.dataDir, g.context)
      let revoked: 'none' | 'node' | 'spread' = 'none'
      if (s !== undefined && await daemonRuns(g.dataDir)) {
        // the session may still act: it makes the node refuse its own token at once
        await callBehavior(g, '/dms/cap/anchor', { op: 'add', kind: 'revoke', value: s.token }).catch((err: unknown) => {
          // revoked before (a copy of a locked session): what lock wants already holds
          if (!(isDmsError(err, 'Unauthorized') && err.fields.reason === 'revoked')) throw err
        })
        revoked = 'node'
        // a record only the issuer can sign spreads it to every node: only without a prompt
        if ((process.env.DMS_PASSPHRASE ?? '') !== '') {
          await callBehavior(g, '/dms/cap/revoke', { record: createRevocation(await loadIdentity(g), s.token) }, { session: { ...await openSession(g), unlocked: undefined } })
          revoked = 'spread'
        }
      }
      await deleteSession(g.dataDir, g.context)
      emit(o, { locked: true, context: g.context, session: s !== undefined, revoked }, v => `${green('locked')} '${v.context}'${v.session ? ` (session token revoked: ${v.revoked})` : ' (no session was open)'}`)
    })
}

async function daemonRuns (dataDir: string): Promise<boolean> {
  try { await readDaemonInfo(dataDir); return true } catch (err) {
    if (isDmsError(err, 'NotRunning')) return false
    throw err
  }
}

