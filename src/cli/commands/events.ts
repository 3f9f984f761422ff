import type { Command } from 'commander'
import { InvalidArgument } from '../../lib/errors.js'
import { parseDuration } from '../../lib/units.js'
import type { NodeEvent } from '../../node/events.js'
import { callBehavior, openSession } from '../call.js'
import { globalsFrom, withCommon } from '../common.js'

interface EventsOpts { dataDir?: string, context?: string, timeout?: string, follow?: boolean, since?: string, dest?: string }

/** One long poll of --follow: well inside an envelope's lifetime, renewed at once. */
const POLL_MS = 25_000

/**
 * `--since`: a sequence number (events after it), an ISO-8601 time, or a duration back from now
 * (`5m`: the last five minutes). The node keeps its last events only (see /dms/node/events).
 */
export function parseSince (arg: string | undefined, now = Date.now()): { after: number } | { from: number } {
  if (arg === undefined) return { after: 0 }
  if (/^\d+$/.test(arg)) return { after: Number(arg) }
  const t = Date.parse(arg)
  if (!Number.isNaN(t) && /^\d{4}-\d{2}-\d{2}/.test(arg)) return { from: t }
  try {
    return { from: now - parseDuration(arg, '--since') }
  } catch {
    throw new InvalidArgument(`--since takes an event number, an ISO-8601 time or a duration (5m); got '${arg}'`, { field: 'since' })
  }
}

/** `dms events [--follow] [--since SEQ|TIME|DURATION]`: one JSON line per event. */
export function register (program: Command): void {
  withCommon(program.command('events'))
    .description('the node\'s events (peers, hello, state, onboarding, allocations, deployments, capabilities), one JSON line each')
    .option('--follow', 'keep printing events as they happen (Ctrl-C stops)')
    .option('--since <seq|time|duration>', 'only events after this number, at or after this ISO time, or within this duration (e.g. 5m)')
    .option('--dest <peer>', 'ask another node (PeerId or did:key) that granted you /dms/node/events')
    .addHelpText('after', '\nExamples:\n  dms events --follow\n  dms events --since 10m\n  dms events --since 42 --follow')
    .action(async (o: EventsOpts) => {
      const g = globalsFrom(o)
      const s = await openSession(g)
      const since = parseSince(o.since)
      let after = 'after' in since ? since.after : 0
      const from = 'from' in since ? since.from : undefined
      const print = (e: NodeEvent): void => {
        if (from === undefined || Date.parse(e.at) >= from) process.stdout.write(JSON.stringify(e) + '\n')
      }
      for (;;) {
        const follow = o.follow === true
        const r = await callBehavior<{ events: NodeEvent[], last: number }>(g, '/dms/node/events', { after, wait: follow }, { session: s, dest: o.dest, timeoutMs: follow ? POLL_MS : g.timeoutMs })
        for (const e of r.events) print(e)
        // a node that restarted numbers from 1 again: follow it from there
        after = r.events.at(-1)?.seq ?? (r.last < after ? r.last : after)
        if (!follow) return
      }
    })
}
