import type { Logger } from 'pino'
import { silentLogger } from '../lib/log.js'
import type { Db } from '../store/db.js'
import type { Identity } from '../identity/identity.js'
import { createAuthorizer, type CachingAuthorizer, type ProofSource } from './authorizer.js'
import { createDelegatedProofSource, createProofSource } from './proofs.js'
import { RevocationStore } from './revocations.js'
import { createCapService, type CapService, type Publisher } from './service.js'
import { ContextTrust } from './trust.js'

export interface CapabilitiesInit {
  dataDir: string
  /** The context whose anchors authorize invocations of this node; `dms` for the daemon. */
  context?: string
  /** The node's DID: always trusted on itself, and the target a node-restricted token must name. */
  selfDid: string
  /** Where revocation records persist; memory-only without. */
  db?: Db
  log?: Logger
  now?: () => number
}

/** The capability layer of a node, built by `createCapabilities` and wired by node/. */
export interface Capabilities {
  authorizer: CachingAuthorizer
  /** Proofs for the node's own outgoing invocations (its provide anchors). */
  proofs: ProofSource
  service: CapService
  /** Loads anchors and revocations, then follows edits of the anchors file. */
  start: () => Promise<void>
  stop: () => Promise<void>
  /** Gives the service the actor that publishes revocations (once the actor system exists). */
  attach: (publisher: Publisher) => void
  /** Calls `fn` after every change of the anchors or the revocations (already in force then). */
  onChange: (fn: () => void) => () => void
  /** Proofs for a child actor (`subject`) acting for the node `issuer` on other nodes (createDelegatedProofSource). */
  delegatedProofs: (issuer: Identity, subject: string, lifetimeMs: number) => ProofSource
}

export async function createCapabilities (init: CapabilitiesInit): Promise<Capabilities> {
  const log = init.log ?? silentLogger()
  const context = init.context ?? 'dms'
  const trust = new ContextTrust({ dataDir: init.dataDir, context, selfDid: init.selfDid, log })
  const revocations = new RevocationStore({ db: init.db, now: init.now })
  const authorizer = createAuthorizer({
    trust: () => trust.index,
    isRevoked: (id, iss) => revocations.has(id, iss),
    selfDid: init.selfDid
  })
  // Records from the network are kept only for issuers this node knows, until their token's expiry.
  revocations.setPolicy({ knowsIssuer: authorizer.knowsIssuer, expiryOf: authorizer.expiryOf })
  // Cached chains carry what they meant under the old anchors: drop them all when those change,
  // and only the chains a revocation touches when one arrives.
  trust.onChange(authorizer.invalidate)
  revocations.onAdded(authorizer.revoked)
  let publisher: Publisher | undefined
  const service = createCapService({ trust, revocations, publisher: () => publisher, log })
  return {
    authorizer,
    proofs: createProofSource(() => trust.index, init.now),
    service,
    start: async () => {
      await revocations.load()
      await trust.reload()
      await trust.watch()
    },
    stop: async () => { trust.close() },
    attach: (p) => { publisher = p },
    delegatedProofs: (issuer, subject, lifetimeMs) => createDelegatedProofSource(issuer, () => trust.index, subject, lifetimeMs, init.now),
    onChange: (fn) => {
      const offTrust = trust.onChange(fn)
      const offRevocations = revocations.onAdded(() => { fn() })
      return () => { offTrust(); offRevocations() }
    }
  }
}

export { createAuthorizer, type Authorizer, type AuthorizeRequest, type CachingAuthorizer, type ProofSource } from './authorizer.js'
export { addRoot, addAnchor, removeAnchor, readAnchors, newContext, contextExists, anchorsPath, type AnchorKind, type Anchors } from './anchors.js'
export { loadProofSource, createProofSource, selectProofs } from './proofs.js'
export { createRevocation, verifyRevocation, RevocationRecordSchema, RevocationStore, type RevocationRecord } from './revocations.js'
export { grantToken, delegateTokens, expiryFrom, type GrantRequest, type SelfSign } from './issue.js'
export { decodeToken, verifyToken, issueToken, tokenId, type Token, type Grant } from './ucan.js'
export { implies, covers, attenuates } from './paths.js'
export { ContextTrust, buildIndex, type TrustIndex } from './trust.js'
export type { CapService, AnchorsView, TokenView, Publisher, RevokeResult } from './service.js'
export type { Reason } from './reasons.js'
export { REVOKE_TOPIC, REVOKE_BROADCAST } from './constants.js'
