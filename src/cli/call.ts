import { encodeEnvelope, newNonce } from '../actor/envelope.js'
import { PendingReplies } from '../actor/pending.js'
import { unwrapReply } from '../actor/system.js'
import type { Envelope, Handle } from '../actor/types.js'
import { ApiClient, readDaemonInfo, type DaemonInfo } from '../api/client.js'
import { didFromPeerId, isDid, peerIdFromDid, type Did } from '../identity/did.js'
import type { Identity } from '../identity/identity.js'
import { Keystore } from '../identity/keystore.js'
import { getPassphrase } from '../identity/passphrase.js'
import { InvalidArgument } from '../lib/errors.js'
import { loadProofSource } from '../security/index.js'
import type { CliGlobals } from './common.js'

/** Inbox name the CLI uses in its `from` handle; replies are matched by their one-shot path. */
const CLI_INBOX = 'cli'

export async function loadIdentity (g: CliGlobals): Promise<Identity> {
  const ks = new Keystore(g.dataDir)
  return await ks.load(g.context, await getPassphrase(`unlock the '${g.context}' key`))
}

/** A destination given on the command line: a PeerId or a did:key. */
export function parseDest (dest: string): Handle {
  if (dest.startsWith('did:')) {
    if (!isDid(dest)) throw new InvalidArgument(`--dest is not an Ed25519 did:key: ${dest}`)
    return { id: dest, did: dest, addr: { peer: peerIdFromDid(dest), inbox: 'root' } }
  }
  let did: Did
  try { did = didFromPeerId(dest) } catch { throw new InvalidArgument(`--dest must be a PeerId or a did:key, got '${dest}'`) }
  return { id: did, did, addr: { peer: dest, inbox: 'root' } }
}

export interface Session { daemon: DaemonInfo, api: ApiClient, identity: Identity }

export async function openSession (g: CliGlobals): Promise<Session> {
  const daemon = await readDaemonInfo(g.dataDir)
  return { daemon, api: new ApiClient(daemon.api), identity: await loadIdentity(g) }
}

/** Builds and signs an envelope from this CLI context, with the proofs its anchors provide. */
export async function buildEnvelope (g: CliGlobals, s: Session, to: Handle, behavior: string, payload: unknown, extra: { cont?: boolean, topic?: string, cap?: string[] } = {}): Promise<{ env: Envelope, frame: Uint8Array }> {
  const from: Handle = { id: s.identity.did, did: s.identity.did, addr: { peer: s.daemon.peerId, inbox: CLI_INBOX } }
  const nonce = newNonce()
  // explicit tokens (raw envelopes) replace what the context's provide anchors would give
  const proofs = extra.cap ?? (behavior.startsWith('/public/') ? [] : await (await loadProofSource(g.dataDir, g.context)).proofsFor(behavior, to.id, extra.topic))
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
  return { env, frame: encodeEnvelope(env, s.identity.sign) }
}

/**
 * Invokes a behaviour as the CLI context (default `user`) through the local daemon: the envelope
 * is signed here with the context's key and relayed by the daemon's API. Resolves with the reply
 * value; rejects with the typed error the destination answered.
 */
export async function callBehavior<T = unknown> (g: CliGlobals, behavior: string, payload: unknown, opts: { dest?: string, to?: Handle, session?: Session, timeoutMs?: number } = {}): Promise<T> {
  const s = opts.session ?? await openSession(g)
  const to = opts.to ?? (opts.dest !== undefined ? parseDest(opts.dest) : { id: s.daemon.did as Did, did: s.daemon.did as Did, addr: { peer: s.daemon.peerId, inbox: 'root' } })
  const timed = opts.timeoutMs !== undefined ? { ...g, timeoutMs: opts.timeoutMs } : g
  const { frame } = await buildEnvelope(timed, s, to, behavior, payload, { cont: true })
  const { reply } = await s.api.invoke(frame, timed.timeoutMs)
  return unwrapReply<T>(reply)
}
