import { existsSync } from 'node:fs'
import type { Command } from 'commander'
import { readDaemonInfo } from '../../api/client.js'
import { Keystore } from '../../identity/keystore.js'
import { getPassphrase } from '../../identity/passphrase.js'
import { InvalidArgument, NotFound, isDmsError } from '../../lib/errors.js'
import {
  addAnchor, anchorsPath, newContext, readAnchors, removeAnchor, type AnchorKind, type Anchors
} from '../../security/anchors.js'
import { delegateTokens, expiryFrom, grantToken, type GrantRequest, type SelfSign } from '../../security/issue.js'
import { createRevocation } from '../../security/revocations.js'
import { anchorsView, viewToken, type AnchorsView } from '../../security/service.js'
import { buildIndex } from '../../security/trust.js'
import { tokenId } from '../../security/ucan.js'
import { assertNodeDid, callBehavior, loadIdentity, parseNode } from '../call.js'
import { ago, bold, dim, emit, globalsFrom, green, red, table, withCommon, type CliGlobals, type OutputOpts } from '../common.js'

interface CommonOpts extends OutputOpts { dataDir?: string, context?: string, timeout?: string }
interface GrantOpts extends CommonOpts {
  cap?: string[]
  topic?: string[]
  audience?: string
  depth?: string
  expiry?: string
  duration?: string
  tokenOnly?: boolean
  json?: boolean
  output?: string
}
interface AnchorOpts extends CommonOpts { root?: string, require?: string, provide?: string, revoke?: string }

const collect = (v: string, prev: string[] = []): string[] => [...prev, v]

/** What `dms cap` commands need, for their help. */
const CAP_NEEDS = 'Needs: the data dir, and the passphrase of the --context key where it signs (grant, delegate,\nrevoke, new: DMS_PASSPHRASE or a prompt). Edits of --context dms go through the daemon while it runs.'

/** The context the daemon authorizes with: edits of it go through the running daemon. */
const DAEMON_CONTEXT = 'dms'

/** Several tokens travel as one comma-separated argument (what `cap delegate` prints). */
function splitTokens (arg: string): string[] {
  return arg.split(',').map(s => s.trim()).filter(s => s.length > 0)
}

async function grantRequest (g: CliGlobals, subject: string, o: GrantOpts): Promise<GrantRequest> {
  let depth: number | undefined
  if (o.depth !== undefined) {
    depth = Number(o.depth)
    if (!/^\d+$/.test(o.depth)) throw new InvalidArgument(`--depth takes a whole number, got '${o.depth}'`)
  }
  // a node is named by its PeerId or its DID, as for --dest; a token carries the DID
  let node: string | undefined
  if (o.audience !== undefined) {
    node = parseNode(o.audience, '--audience').did
    await assertNodeDid(g, node, '--audience')
  }
  return { subject, caps: o.cap ?? [], topics: o.topic ?? [], node, depth, exp: expiryFrom(o) }
}

/** Whether a daemon serves this data dir (then anchor edits of `dms` must go through it). */
async function daemonRunning (g: CliGlobals): Promise<boolean> {
  try {
    await readDaemonInfo(g.dataDir)
    return true
  } catch (err) {
    if (isDmsError(err, 'NotRunning')) return false
    throw err
  }
}

async function contextDid (g: CliGlobals): Promise<string | undefined> {
  try { return await new Keystore(g.dataDir).did(g.context) } catch { return undefined }
}

/** A context's anchors from its file; its tokens the node's own revoke anchors refuse are marked too. */
async function localView (g: CliGlobals, anchors?: Anchors): Promise<AnchorsView> {
  const nodeRevoked = g.context === DAEMON_CONTEXT ? new Set<string>() : new Set((await readAnchors(g.dataDir, DAEMON_CONTEXT)).revoke.map(tokenId))
  return anchorsView(g.context, anchors ?? await readAnchors(g.dataDir, g.context), await contextDid(g), id => nodeRevoked.has(id))
}

/** `cap list --context nope` is an error, not an empty list: the context has neither key nor anchors. */
async function assertContext (g: CliGlobals): Promise<void> {
  if (await contextDid(g) !== undefined || existsSync(anchorsPath(g.dataDir, g.context))) return
  throw new NotFound(`no context '${g.context}' in ${g.dataDir} ('dms key list' shows them; 'dms cap new ${g.context}' creates it)`, { context: g.context })
}

function humanAnchors (v: AnchorsView): string {
  const tokens = (list: AnchorsView['provide']): string => table(['ID', 'ISSUER', 'SUBJECT', 'CAPABILITIES', 'EXPIRES', 'STATE'], list.map(t => [
    t.id.slice(0, 16) + '…', t.issuer.slice(0, 20) + '…', t.subject.slice(0, 20) + '…', [...t.capabilities, ...t.topics.map(x => `topic ${x}`)].join(', '),
    t.expiry, t.revoked ? red('revoked') : t.expired ? red('expired') : green('valid')]))
  return [`${bold('context')} ${v.context}  ${v.did ?? ''}`, `${bold('roots')}\n${v.roots.length === 0 ? dim('(none)') : v.roots.join('\n')}`,
    `${bold('require')}\n${tokens(v.require)}`, `${bold('provide')}\n${tokens(v.provide)}`, `${bold('revoked')}\n${tokens(v.revoked)}`].join('\n\n')
}

/** Exactly one of --root/--require/--provide/--revoke, as (kind, values). */
function anchorArg (o: AnchorOpts): { kind: AnchorKind, values: string[] } {
  const given = (['root', 'require', 'provide', 'revoke'] as const).filter(k => o[k] !== undefined)
  if (given.length !== 1) throw new InvalidArgument('give exactly one of --root <DID>, --require <token>, --provide <token> or --revoke <token>')
  const kind = given[0]
  const raw = o[kind] as string
  return { kind, values: kind === 'root' ? [raw.trim()] : splitTokens(raw) }
}

/** Adds or removes anchors: through the daemon for its own context while it runs, else in the file. */
async function editAnchors (g: CliGlobals, op: 'add' | 'remove', kind: AnchorKind, values: string[]): Promise<AnchorsView> {
  if (values.length === 0) throw new InvalidArgument(`no ${kind} value given`)
  if (g.context === DAEMON_CONTEXT && await daemonRunning(g)) {
    let view: AnchorsView | undefined
    for (const value of values) view = await callBehavior<AnchorsView>(g, '/dms/cap/anchor', { op, kind, value })
    return view as AnchorsView
  }
  const subject = await contextDid(g)
  let anchors: Anchors | undefined
  for (const value of values) {
    anchors = op === 'add' ? await addAnchor(g.dataDir, g.context, kind, value, subject) : await removeAnchor(g.dataDir, g.context, kind, value)
  }
  return await localView(g, anchors)
}

/**
 * One JSON document: `token` (several comma-separated, as `--provide` takes them) and `tokens`,
 * each token with its summary. `--token-only` prints the token alone, for `$(dms cap grant …)`.
 */
function printTokens (tokens: string[], o: GrantOpts): void {
  if (o.tokenOnly === true) {
    process.stdout.write(tokens.join(',') + '\n')
    return
  }
  emit(o, { token: tokens.join(','), tokens: tokens.map(t => ({ ...viewToken(t), token: t })) },
    v => [...v.tokens.map(t => `${t.id}  ${t.issuer} → ${t.subject}\n  ${[...t.capabilities, ...t.topics.map(x => `topic ${x}`)].join(', ')}  expires ${ago(t.expiry)}`), '', v.token].join('\n'))
}

function withGrantOptions (cmd: Command): Command {
  return withCommon(cmd, 'user', CAP_NEEDS)
    .option('--cap <path>', 'capability path granted (repeatable): /dms/node covers /dms/node/peers/list; / covers all', collect)
    .option('--topic <topic>', 'broadcast topic granted (repeatable): /nunet covers /nunet/hello', collect)
    .option('--audience <node>', 'the node the token may be used on, by PeerId or node DID (default: any node)')
    .option('--depth <n>', 'how many further delegations are allowed below this token (default: unlimited)')
    .option('--expiry <RFC3339>', 'expiry time, e.g. 2030-01-31T12:00:00Z')
    .option('--duration <duration>', 'lifetime from now, e.g. 1h, 7d')
    .option('--token-only', 'print the token alone (several comma-separated), for $(dms cap grant …)')
}

/** `dms cap new|list|grant|delegate|anchor|remove|revoke`. */
export function register (program: Command): void {
  const cap = program.command('cap').description('capabilities: trust anchors of a context, granting, delegating and revoking tokens')

  withCommon(cap.command('new <context>'), 'user', CAP_NEEDS)
    .description('create a capability context (its anchors file, and its key when it has none)')
    .action(async (context: string, o: CommonOpts) => {
      const g = { ...globalsFrom(o), context }
      const ks = new Keystore(g.dataDir)
      const key = !await ks.exists(context)
      if (key) await ks.create(context, await getPassphrase(`protect the '${context}' key`, { confirm: process.env.DMS_PASSPHRASE === undefined }))
      await newContext(g.dataDir, context)
      emit(o, { context, did: await ks.did(context), created: key ? ['key', 'anchors'] : ['anchors'] })
    })

  withCommon(cap.command('list'), 'user', CAP_NEEDS)
    .description('anchors of a context: roots, require, provide and revoked tokens')
    .action(async (o: CommonOpts) => {
      const g = globalsFrom(o)
      await assertContext(g)
      emit(o, g.context === DAEMON_CONTEXT && await daemonRunning(g) ? await callBehavior<AnchorsView>(g, '/dms/cap/list', {}) : await localView(g), humanAnchors)
    })

  withGrantOptions(cap.command('grant <subjectDID>'))
    .description('issue a token from this context on its own authority; prints {token, tokens: [{…summary, token}]} (--token-only: the token alone)')
    .action(async (subject: string, o: GrantOpts) => {
      const g = globalsFrom(o)
      const req = await grantRequest(g, subject, o)
      printTokens([await grantToken(await loadIdentity(g), req)], o)
    })

  withGrantOptions(cap.command('delegate <subjectDID>'))
    .description('delegate part of what this context holds (its provide anchors); never more than it holds')
    .option('--self-sign <mode>', 'also issue a token on this context\'s own authority: no | also | only', 'no')
    .action(async (subject: string, o: GrantOpts & { selfSign: string }) => {
      const g = globalsFrom(o)
      if (!['no', 'also', 'only'].includes(o.selfSign)) throw new InvalidArgument(`--self-sign is no, also or only; got '${o.selfSign}'`)
      const req = await grantRequest(g, subject, o)
      const held = (await buildIndex(await readAnchors(g.dataDir, g.context))).provide
      printTokens(await delegateTokens(await loadIdentity(g), held, req, o.selfSign as SelfSign), o)
    })

  const anchorOptions = (cmd: Command): Command => withCommon(cmd, 'user', CAP_NEEDS)
    .option('--root <DID>', 'a DID trusted fully')
    .option('--require <token>', 'a token from a root to a foreign DID: that organisation\'s chains are accepted within it')
    .option('--provide <token>', 'a token issued to this context, presented as proof when it invokes (comma-separated for several)')
    .option('--revoke <token>', 'a token this context refuses')

  anchorOptions(cap.command('anchor'))
    .description('add a trust anchor (for --context dms, through the running daemon so it applies at once)')
    .action(async (o: AnchorOpts) => {
      const { kind, values } = anchorArg(o)
      emit(o, await editAnchors(globalsFrom(o), 'add', kind, values))
    })

  anchorOptions(cap.command('remove'))
    .description('remove a trust anchor (a token may be named by its id, as `cap list` shows it)')
    .action(async (o: AnchorOpts) => {
      const { kind, values } = anchorArg(o)
      emit(o, await editAnchors(globalsFrom(o), 'remove', kind, values))
    })

  withCommon(cap.command('revoke <token>'), 'user', CAP_NEEDS)
    .description('revoke a token this context issued: signed here, recorded by the local daemon and spread to every node')
    .action(async (token: string, o: CommonOpts) => {
      const g = globalsFrom(o)
      const record = createRevocation(await loadIdentity(g), token.trim())
      if (await daemonRunning(g)) {
        emit(o, await callBehavior(g, '/dms/cap/revoke', { record }))
        return
      }
      // No daemon: the node refuses the token from its next start, but nobody else hears of it.
      await addAnchor(g.dataDir, DAEMON_CONTEXT, 'revoke', record.token ?? token)
      process.stderr.write('warning: no daemon is running; the token is refused by this node only. Run `dms cap revoke` again once it runs to spread the revocation.\n')
      emit(o, { id: record.revoke, fresh: true, spread: false })
    })
}
