import '../lib/polyfill.js'
import { Command } from 'commander'
import type { AnyBehavior } from '../actor/behavior.js'
import type { Envelope } from '../actor/types.js'
import { unwrapReply } from '../actor/system.js'
import { Keystore } from '../identity/keystore.js'
import { getPassphrase } from '../identity/passphrase.js'
import { BadRequest, DmsError, InvalidArgument } from '../lib/errors.js'
import { VERSION } from '../node/version.js'
import { initDataDir } from '../node/init.js'
import type { ConfigInput } from '../node/config.js'
import { behaviorHelp } from './behavior-docs.js'
import { completionScript } from './completion.js'
import { buildEnvelope, callBehavior, openSession, parseDest } from './call.js'
import { emit, globalsFrom, printJson, table, withCommon, withOutput, type OutputOpts } from './common.js'
import { register as registerCap } from './commands/cap.js'
import { register as registerOnboard } from './commands/onboard.js'
import { register as registerNode } from './commands/node.js'
import { register as registerAlloc } from './commands/alloc.js'
import { register as registerVm } from './commands/vm.js'
import { assertDataDir, daemonPassphrase, ensureDataDir, register as registerDaemon, runDetached } from './commands/daemon.js'
import { register as registerPeers } from './commands/peers.js'
import { register as registerUnlock } from './commands/unlock.js'
import { register as registerDeploy } from './commands/deploy.js'
import { register as registerEvents } from './commands/events.js'
import { register as registerUi } from './commands/ui.js'

const collect = (v: string, prev: string[] = []): string[] => [...prev, v]

const TOP_HELP = `
Examples:
  dms run --detach                        start the daemon in the background (keys made on first run)
  dms status                              is it up? version, uptime, identity, state, peers, resources
  dms peers                               the peers it knows
  dms onboard --cpu 1 --ram 2GiB --disk 10GiB
  dms alloc run --wait -- echo hello      run a task on this node
  dms actor cmd --help                    every behaviour, with its request fields
  dms ui --open                           the web dashboard (a one-time login URL)
  dms unlock --for 8h                     type the passphrase once for the next 8 hours (dms lock ends it)
  dms stop                                stop the daemon

Environment:
  DMS_HOME        the data dir when --data-dir is not given (default ~/.dms)
  DMS_PASSPHRASE  the passphrase of the data dir's keys; without it a terminal prompts, and a
                  command with neither fails (NoPassphrase). dms unlock asks once for a session
                  (dms lock ends it); dms status and dms version need none
  DMS_LOG_LEVEL   daemon log level (info); DMS_LOG_FORMAT=json forces JSON logs
  DMS_LISTEN, DMS_BOOTSTRAP, DMS_API_PORT, DMS_MDNS: daemon settings (README, "Data and configuration")
  NO_COLOR        no colour in human output (there is none when stdout is not a terminal)

Output: human text on a terminal; JSON (as specs/cli.md documents) when piped, or with --json / -o json.
Most commands talk to the running daemon of the data dir and sign with the user key.`

function parseJson (flag: string, text: string | undefined): unknown {
  if (text === undefined) return {}
  try { return JSON.parse(text) } catch (err) { throw new InvalidArgument(`${flag} is not JSON: ${(err as Error).message}`) }
}

/**
 * The behaviour list for help text, loaded only when help is shown. (Imported statically it would
 * make every command pay for loading every behaviour's dependencies.)
 */
let loadedBehaviors: readonly AnyBehavior[] = []
export function setBehaviorList (list: readonly AnyBehavior[]): void { loadedBehaviors = list }
function behaviorList (): readonly AnyBehavior[] { return loadedBehaviors }

export function buildProgram (): Command {
  const program = new Command('dms')
    .description('dms: a peer-to-peer node runtime. Actors addressed by DIDs, libp2p transport, UCAN capabilities.')
    .version(VERSION)
    .showHelpAfterError()
    .addHelpText('after', TOP_HELP)

  program.command('init')
    .description('create the node (dms) and user keys and make the user a root of this node; idempotent')
    .option('--data-dir <dir>', 'data directory (default: $DMS_HOME or ~/.dms)')
    .action(async (o: { dataDir?: string }) => {
      const dataDir = globalsFrom(o).dataDir
      await ensureDataDir(dataDir)
      printJson(await initDataDir(dataDir, await getPassphrase('protect the keys', { confirm: process.env.DMS_PASSPHRASE === undefined })))
    })

  program.command('run')
    .description('run the daemon (keys are created on first run)')
    .option('--data-dir <dir>', 'data directory (default: $DMS_HOME or ~/.dms)')
    .option('--listen <multiaddr>', 'libp2p listen address (repeatable; default /ip4/0.0.0.0/tcp/9000)', collect)
    .option('--bootstrap <multiaddr>', 'peer to dial at start, with /p2p/<id> (repeatable)', collect)
    .option('--api-port <port>', 'local API port on 127.0.0.1 (0 = any free port; default 9999)')
    .option('--no-mdns', 'disable LAN discovery (mDNS)')
    .option('-d, --detach', 'start in the background: return once ready (or exit 1 with the daemon\'s error); logs go to <data-dir>/daemon.log')
    .option('--timeout <duration>', 'with --detach: how long to wait for ready', '60s')
    .option('--json', 'with --detach: print the daemon\'s info as JSON')
    .addHelpText('after', '\nExamples:\n  dms run                                   # in the foreground; Ctrl-C stops it\n  dms run --detach && dms status            # in the background\n  dms run --detach --listen /ip4/127.0.0.1/tcp/4001 --api-port 9101 --no-mdns --data-dir /tmp/a')
    .action(async (o: { dataDir?: string, listen?: string[], bootstrap?: string[], apiPort?: string, mdns: boolean, detach?: boolean, timeout: string, json?: boolean }, cmd: Command) => {
      const flags: ConfigInput = {}
      if (o.listen !== undefined) flags.listen = o.listen
      if (o.bootstrap !== undefined) flags.bootstrap = o.bootstrap
      if (o.apiPort !== undefined) {
        const port = Number(o.apiPort)
        if (!Number.isInteger(port)) throw new InvalidArgument(`--api-port must be an integer, got '${o.apiPort}'`)
        flags.apiPort = port
      }
      if (!o.mdns) flags.mdns = false
      const dataDir = globalsFrom(o).dataDir
      if (o.detach === true) {
        await runDetached(dataDir, detachedArgs(cmd, dataDir), o)
        return
      }
      await ensureDataDir(dataDir)
      // loaded here: the daemon pulls in libp2p (~0.8 s), which no other command needs
      const { runDaemon } = await import('../node/daemon.js')
      await runDaemon({ dataDir, flags, passphrase: async () => await daemonPassphrase(dataDir) })
    })

  const key = program.command('key').description('manage the keys of this data dir')
  key.command('new <context>')
    .description('create a key for a new context')
    .option('--data-dir <dir>', 'data directory')
    .action(async (context: string, o: { dataDir?: string }) => {
      const ks = new Keystore(globalsFrom(o).dataDir)
      const id = await ks.create(context, await getPassphrase(`protect the '${context}' key`, { confirm: process.env.DMS_PASSPHRASE === undefined }))
      printJson({ context, did: id.did })
    })
  key.command('did')
    .description('print the DID of a context (no passphrase needed)')
    .option('--data-dir <dir>', 'data directory')
    .option('--context <context>', 'key context', 'user')
    .action(async (o: { dataDir?: string, context: string }) => {
      process.stdout.write(await new Keystore(globalsFrom(o).dataDir).did(o.context) + '\n')
    })
  withOutput(key.command('list'))
    .description('list contexts and their DIDs (no passphrase needed)')
    .option('--data-dir <dir>', 'data directory')
    .action(async (o: { dataDir?: string } & OutputOpts) => {
      emit(o, { keys: await new Keystore(globalsFrom(o).dataDir).list() }, v => table(['CONTEXT', 'DID'], v.keys.map(k => [k.context, k.did])))
    })

  const actor = program.command('actor').description('talk to actors: invoke behaviours, send and broadcast envelopes')
  withCommon(actor.command('cmd <behavior>'))
    .description('invoke a behaviour and print its reply as JSON')
    .option('--dest <peerIdOrDid>', 'destination node (default: the local node)')
    .option('--data <json>', 'request payload (JSON)')
    .addHelpText('after', () => behaviorHelp(behaviorList()))
    .action(async (behavior: string, o: { dest?: string, data?: string, dataDir?: string, context?: string, timeout?: string }) => {
      printJson(await callBehavior(globalsFrom(o), behavior, parseJson('--data', o.data), { dest: o.dest }))
    })

  for (const mode of ['invoke', 'send', 'broadcast'] as const) {
    withCommon(actor.command(mode))
      .description(`${mode} a raw envelope: JSON {to?, be, msg?, topic?, cap?} from --envelope or stdin, signed here with the context key (cap given replaces the context's own proofs)`)
      .option('--envelope <json>', 'the envelope (JSON); read from stdin when absent')
      .action(async (o: { envelope?: string, dataDir?: string, context?: string, timeout?: string }) => {
        const g = globalsFrom(o)
        const raw = parseJson('--envelope', o.envelope ?? await readStdin()) as Partial<Envelope> & { to?: string | Envelope['to'] }
        if (typeof raw.be !== 'string') throw new BadRequest('the envelope needs a behaviour path in "be"')
        if (mode === 'broadcast' && typeof raw.topic !== 'string') throw new BadRequest('a broadcast envelope needs a "topic"')
        const s = await openSession(g)
        const to = raw.to === undefined ? { id: s.daemon.did, did: s.daemon.did, addr: { peer: s.daemon.peerId, inbox: 'root' } } as Envelope['to'] : typeof raw.to === 'string' ? parseDest(raw.to) : raw.to
        if (raw.cap !== undefined && (!Array.isArray(raw.cap) || raw.cap.some(t => typeof t !== 'string'))) throw new BadRequest('"cap" must be an array of token strings')
        const { frame } = await buildEnvelope(g, s, to, raw.be, raw.msg ?? {}, { cont: mode === 'invoke', topic: raw.topic, cap: raw.cap })
        if (mode === 'invoke') {
          const r = await s.api.invoke(frame, g.timeoutMs)
          printJson({ from: r.from, reply: unwrapReply(r.reply) })
        } else if (mode === 'send') {
          await s.api.send(frame, g.timeoutMs); printJson({ sent: true })
        } else {
          await s.api.broadcast(frame, g.timeoutMs); printJson({ published: true, topic: raw.topic })
        }
      })
  }

  registerCap(program)
  registerOnboard(program)
  registerNode(program)
  registerAlloc(program)
  registerVm(program)
  registerDaemon(program)
  registerPeers(program)
  registerUnlock(program)
  registerEvents(program)
  registerUi(program)
  program.command('completion <shell>')
    .description('print a shell completion script: bash, zsh or fish (eval "$(dms completion bash)")')
    .action((shell: string) => { process.stdout.write(completionScript(program, shell)) })
  program.hook('preAction', async (_program, action) => { await checkDataDir(action) })
  registerDeploy(program)
  return program
}

/** Commands that create their data dir; every other one refuses a dir that does not exist. */
const CREATE_DATA_DIR = new Set(['init', 'run'])

async function checkDataDir (action: Command): Promise<void> {
  if (CREATE_DATA_DIR.has(action.name()) && action.parent?.parent === null) return
  // `deploy --dry-run` checks a file and needs no daemon, and so no data dir
  if (action.name() === 'deploy' && action.opts<{ dryRun?: boolean }>().dryRun === true) return
  if (!action.options.some(opt => opt.long === '--data-dir')) return
  await assertDataDir(globalsFrom(action.optsWithGlobals<{ dataDir?: string }>()).dataDir)
}

/** The `run` flags given, for the detached child, without `--detach` and its own. */
function detachedArgs (cmd: Command, dataDir: string): string[] {
  const out = ['--data-dir', dataDir]
  const o = cmd.opts<{ listen?: string[], bootstrap?: string[], apiPort?: string, mdns: boolean }>()
  for (const l of o.listen ?? []) out.push('--listen', l)
  for (const b of o.bootstrap ?? []) out.push('--bootstrap', b)
  if (o.apiPort !== undefined) out.push('--api-port', o.apiPort)
  if (!o.mdns) out.push('--no-mdns')
  return out
}

async function readStdin (): Promise<string | undefined> {
  if (process.stdin.isTTY === true) return undefined
  const chunks: Buffer[] = []
  for await (const c of process.stdin) chunks.push(c as Buffer)
  return Buffer.concat(chunks).toString('utf8')
}

/** Runs the CLI: errors print `<ErrorName>: <message>` on stderr and exit 1. */
export async function main (argv: string[]): Promise<void> {
  // A reader that went away (`dms … | head`) is not an error of ours: stop quietly.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => { if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0); throw err })
  }
  try {
    if (argv.includes('--help') || argv.includes('-h') || argv.includes('help')) {
      setBehaviorList((await import('../../behaviors/index.js')).behaviors as readonly AnyBehavior[])
    }
    await buildProgram().parseAsync(argv)
  } catch (err) {
    if (err instanceof DmsError) {
      // the reason code of a refusal (e.g. Unauthorized's `reason`) is what a person acts on
      const reason = typeof err.fields.reason === 'string' ? ` (reason: ${err.fields.reason})` : ''
      process.stderr.write(`${err.name}: ${err.message}${reason}\n`)
    }
    else if (err instanceof Error && err.name === 'ZodError') process.stderr.write(`BadRequest: ${err.message}\n`)
    else process.stderr.write(`Error: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exitCode = 1
  }
}
