import { generateKeyPair, privateKeyFromRaw } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import type { Ed25519PrivateKey, PrivateKey } from '@libp2p/interface'
import type { KeyObject } from 'node:crypto'
import { didFromPublicKey, privateKeyObject, signWith, type Did } from './did.js'

/** A loaded key: the one source of a PeerId, a did:key and signatures. */
export interface Identity {
  readonly did: Did
  readonly peerId: string
  /** The libp2p key (for the libp2p host's identity). */
  readonly privateKey: PrivateKey
  /** 32-byte raw public key. */
  readonly publicKey: Uint8Array
  sign: (data: Uint8Array) => Uint8Array
  /** 64-byte raw secret (seed ‖ public) for persistence; handle with care. */
  exportRaw: () => Uint8Array
}

export function identityFromPrivateKey (privateKey: PrivateKey): Identity {
  if (privateKey.type !== 'Ed25519') throw new Error('dms keys are Ed25519')
  const ed = privateKey as Ed25519PrivateKey
  const keyObject: KeyObject = privateKeyObject(ed.raw)
  return {
    did: didFromPublicKey(ed.publicKey.raw),
    peerId: peerIdFromPrivateKey(ed).toString(),
    privateKey: ed,
    publicKey: ed.publicKey.raw,
    sign: (data) => signWith(keyObject, data),
    exportRaw: () => ed.raw
  }
}

export function identityFromRaw (raw: Uint8Array): Identity {
  return identityFromPrivateKey(privateKeyFromRaw(raw))
}

export async function newIdentity (): Promise<Identity> {
  return identityFromPrivateKey(await generateKeyPair('Ed25519'))
}
