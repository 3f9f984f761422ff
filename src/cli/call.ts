import { randomBytes } from 'node:crypto'
import { encodeEnvelope, newNonce } from '../actor/envelope.js'
import { PendingReplies } from '../actor/pending.js'
import { unwrapReply } from '../actor/system.js'
import type { Envelope, Handle } from '../actor/types.js'
import { ApiClient, readDaemonInfo, type DaemonInfo } from '../api/client.js'
import { didFromPeerId, isDid, peerIdFromDid, type Did } from '../identity/did.js'
import { newIdentity, type Identity } from '../identity/identity.js'
import { Keystore } from '../identity/keystore.js'
import { getPassphrase } from '../identity/passphrase.js'
import { InvalidArgument, isDmsError } from '../lib/errors.js'
import { loadProofSource } from '../security/index.js'
import type { CliGlobals } from './common.js'
import { readSession, type UnlockSession } from './session.js'
import { STREAM_WINDOW_BYTES } from '../stream/constants.js'

/** Inbox name the CLI uses in its `from` handle; replies are matched by their one-shot path. */
const CLI_INBOX = 'cli'

export async function loadIdentity (g: CliGlobals): Promise<Identity> {
  const ks = new Keystore(g.dataDir)
  return await ks.load(g.context, await getPassphrase(`unlock the '${g.context}' key`))
}

/** A node named on the command line (`--dest`, `--audience`, `peers ping`): a PeerId or its did:key. */
export function parseNode (arg: string, flag = '--dest'): { peerId: string, did: Did } {
  if (arg.startsWith('did:')) {
    if (!isDid(arg)) throw new InvalidArgument(`${flag} is not an Ed25519 did:key: ${arg}`, { field: flag })
    return { peerId: peerIdFromDid(arg), did: arg }
  }
  try { return { peerId: arg, did: didFromPeerId(arg) } } catch {
    throw new InvalidArgument(`${flag} must name a node by its PeerId (12D3Koo…) or its DID (did:key:z6Mk…), got '${arg}'`, { field: flag })
  }
}

/** A destination given on the command line: a PeerId or a did:key. */
export function parseDest (dest: string, flag = '--dest'): Handle {
  const { peerId, did } = parseNode(dest, flag)
  return { id: did, did, addr: { peer: peerId, inbox: 'root' } }
}

/** What a user DID is, for an error where a node was needed. */
export const USER_DID_HINT = 'a user DID names a person (the key that signs commands and holds capabilities), not a node: name a node by its PeerId or node DID (\'dms peers list\' and \'dms peers self\' show them)'

/** Refuses a DID of one of this data dir's user keys (anything but `dms`) where a node is needed. */
export async function assertNodeDid (g: CliGlobals, did: string, flag: string): Promise<void> {
  const mine = (await new Keystore(g.dataDir).list()).find(k => k.did === did && k.context !== 'dms')
  if (mine !== undefined) throw new InvalidArgument(`${flag} ${did} is the DID of your '${mine.context}' key; ${USER_DID_HINT}`, { field: flag })
}

export interface Session {
  daemon: DaemonInfo
  api: ApiClient
  /** The context's own key, when already loaded; else `loadKey` loads it (passphrase) when a call needs it. */
  identity?: Identity
  loadKey?: () => Promise<Identity>
  /** The context's unlock session (`dms unlock`), while it lasts. */
  unlocked?: UnlockSession
}

export async function openSession (g: CliGlobals): Promise<Session> {
  const daemon = await readDaemonInfo(g.dataDir)
  let loaded: Promise<Identity> | undefined
  const identity = async (): Promise<Identity> => await (loaded ??= loadIdentity(g))
  return { daemon, api: new ApiClient(daemon.api), loadKey: identity, unlocked: await readSession(g.dataDir, g.context) }
}

/**
 * A session with a throwaway key, for questions that need no authority (`/public/*`): `dms status`
 * and `dms version` then need no passphrase.
 */
export async function openAnonymousSession (g: CliGlobals): Promise<Session> {
  const daemon = await readDaemonInfo(g.dataDir)
  const throwaway = await newIdentity()
  return { daemon, api: new ApiClient(daemon.api), identity: throwaway }
}

/** Builds and signs an envelope from this CLI context, with the proofs its anchors provide. */
export async function buildEnvelope (g: CliGlobals, s: Session, to: Handle, behavior: string, payload: unknown, extra: { cont?: boolean, topic?: string, cap?: string[] } = {}): Promise<{ env: Envelope, frame: Uint8Array }> {
  const isPublic = behavior.startsWith('/public/')
  // explicit tokens (raw envelopes) replace what the context's provide anchors would give
  let proofs = extra.cap ?? (isPublic ? [] : await (await loadProofSource(g.dataDir, g.context)).proofsFor(behavior, to.id, extra.topic))
  // An unlock session signs what the context may do on its own authority; a call that needs a
  // token others granted the context (or explicit tokens) is signed with the context's key.
  let signer: Identity
  if (s.unlocked !== undefined && extra.cap === undefined && proofs.length === 0) {
    signer = s.unlocked.identity
    proofs = isPublic ? [] : [s.unlocked.token]
  } else {
    signer = s.identity ?? await (s.loadKey ?? (async () => await loadIdentity(g)))()
  }
  const from: Handle = { id: signer.did, did: signer.did, addr: { peer: s.daemon.peerId, inbox: CLI_INBOX } }
  const nonce = newNonce()
  const env: Envelope = {
    v: 1,
    to,
    from,
    be: behavior,
    nonce,
    exp: Date.now() + g.timeoutMs,
    cont: extra.cont === true ? PendingReplies.newCont() : undefined,
    topic: extra.topic,
    cap: proofs.length > 0 ? proofs : undefined,
    msg: payload
  }
  return { env, frame: encodeEnvelope(env, signer.sign) }
}

/**
 * Invokes a behaviour as the CLI context (default `user`) through the local daemon: the envelope
 * is signed here with the context's key and relayed by the daemon's API. Resolves with the reply
 * value; rejects with the typed error the destination answered.
 */
export async function callBehavior<T = unknown> (g: CliGlobals, behavior: string, payload: unknown, opts: { dest?: string, to?: Handle, session?: Session, timeoutMs?: number } = {}): Promise<T> {
  const dest = opts.dest !== undefined ? parseDest(opts.dest) : undefined
  if (dest !== undefined) await assertNodeDid(g, dest.did, '--dest')
  const s = opts.session ?? await openSession(g)
  const to = opts.to ?? dest ?? { id: s.daemon.did as Did, did: s.daemon.did as Did, addr: { peer: s.daemon.peerId, inbox: 'root' } }
  const timed = opts.timeoutMs !== undefined ? { ...g, timeoutMs: opts.timeoutMs } : g
  const { frame } = await buildEnvelope(timed, s, to, behavior, payload, { cont: true })
  try {
    const { reply } = await s.api.invoke(frame, timed.timeoutMs)
    return unwrapReply<T>(reply)
  } catch (err) {
    // a DID that reaches no node may be someone's user DID: say what that is
    if (opts.dest?.startsWith('did:') === true && (isDmsError(err, 'Unreachable') || isDmsError(err, 'Timeout'))) {
      err.message += ` (if ${opts.dest} is a user DID: ${USER_DID_HINT})`
    }
    throw err
  }
}

/**
 * Opens a stream as the CLI context through the local daemon (specs/streams.md): `behavior` must
 * accept one (its request gets `open: {id, window}`). The daemon reads the stream and hands each
 * chunk on over HTTP as it arrives; yields the chunks, returns the writer's end info. Ctrl-C or a
 * kill of this process closes the connection, and the daemon cancels the stream at its source.
 */
export async function * streamBehavior (g: CliGlobals, behavior: string, payload: Record<string, unknown>, opts: { to?: Handle, session?: Session } = {}): AsyncGenerator<unknown, unknown> {
  const s = opts.session ?? await openSession(g)
  const to = opts.to ?? { id: s.daemon.did as Did, did: s.daemon.did as Did, addr: { peer: s.daemon.peerId, inbox: 'root' } }
  const open = { id: randomBytes(16).toString('base64url'), window: STREAM_WINDOW_BYTES }
  const { frame } = await buildEnvelope(g, s, to, behavior, { ...payload, open }, { cont: true })
  return yield * s.api.stream(frame, g.timeoutMs)
}
