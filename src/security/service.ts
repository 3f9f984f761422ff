import type { Logger } from 'pino'
import { z } from 'zod'
import { silentLogger } from '../lib/log.js'
import { validateAnchor, withAnchor, withoutAnchor, type AnchorKind } from './anchors.js'
import { REVOKE_BROADCAST, REVOKE_PUBLISH_LIFETIME_MS, REVOKE_TOPIC } from './constants.js'
import type { RevocationRecord, RevocationStore } from './revocations.js'
import type { ContextTrust } from './trust.js'
import { decodeToken, tokenId } from './ucan.js'

/** A token as `dms cap list` shows it. */
export const TokenView = z.object({
  id: z.string(),
  issuer: z.string(),
  subject: z.string(),
  capabilities: z.array(z.string()),
  topics: z.array(z.string()),
  /** RFC 3339. */
  expiry: z.string(),
  expired: z.boolean(),
  /** The node the token may be used on, when restricted. */
  node: z.string().optional(),
  depth: z.number().optional(),
  /** Links in its chain (1 = issued on the issuer's own authority). */
  links: z.number(),
  /** It, or a token of its chain, is revoked (a revoke anchor or a revocation record): it no longer works. */
  revoked: z.boolean()
})
export type TokenView = z.infer<typeof TokenView>

export const AnchorsView = z.object({
  context: z.string(),
  /** The DID the context acts as (the node's DID for `dms`), when known. */
  did: z.string().optional(),
  roots: z.array(z.string()),
  require: z.array(TokenView),
  provide: z.array(TokenView),
  revoked: z.array(TokenView),
  /** Signed revocation records this node holds (from `dms cap revoke` and gossip). */
  revocations: z.number().optional()
})
export type AnchorsView = z.infer<typeof AnchorsView>

/** Whether the token `id` issued by `iss` is revoked, as far as the viewer knows. */
export type RevokedCheck = (id: string, iss: string) => boolean

export function viewToken (jwt: string, now = Date.now(), isRevoked: RevokedCheck = () => false): TokenView {
  const t = decodeToken(jwt)
  let links = 1
  let revoked = isRevoked(tokenId(jwt), t.payload.iss)
  for (let p = t.payload.prf; p.length > 0 && links < 64; links++) {
    const link = decodeToken(p[0])
    revoked ||= isRevoked(tokenId(p[0]), link.payload.iss)
    p = link.payload.prf
  }
  const v: TokenView = {
    id: tokenId(jwt),
    issuer: t.payload.iss,
    subject: t.payload.aud,
    capabilities: t.grant.caps,
    topics: t.grant.topics,
    expiry: new Date(t.payload.exp * 1000).toISOString(),
    expired: t.payload.exp * 1000 <= now,
    links,
    revoked
  }
  if (t.grant.node !== undefined) v.node = t.grant.node
  if (t.grant.depth !== undefined) v.depth = t.grant.depth
  return v
}

/** Views of the tokens of a list; an undecodable entry (hand-edited file) is shown by its id. */
function views (list: readonly string[], isRevoked: RevokedCheck): TokenView[] {
  return list.map(jwt => {
    try { return viewToken(jwt, Date.now(), isRevoked) } catch {
      return { id: tokenId(jwt), issuer: '?', subject: '?', capabilities: [], topics: [], expiry: '', expired: true, links: 0, revoked: isRevoked(tokenId(jwt), '?') }
    }
  })
}

/**
 * `isRevoked`: what else the viewer knows to be revoked (the daemon's revocation records, another
 * context's revoke anchors); the context's own revoke anchors always count.
 */
export function anchorsView (context: string, anchors: { roots: string[], require: string[], provide: string[], revoke: string[] }, did?: string, isRevoked: RevokedCheck = () => false): AnchorsView {
  const anchored = new Set(anchors.revoke.map(tokenId))
  const check: RevokedCheck = (id, iss) => anchored.has(id) || isRevoked(id, iss)
  return { context, did, roots: anchors.roots, require: views(anchors.require, check), provide: views(anchors.provide, check), revoked: views(anchors.revoke, () => true) }
}

/** What publishing a revocation needs of the actor system (the node's root actor fits). */
export interface Publisher {
  publish: (topic: string, behavior: string, payload: unknown, opts?: { timeout?: number }) => Promise<void>
}

export interface RevokeResult {
  /** Id (CID) of the revoked token. */
  id: string
  /** False when this node already held the record. */
  fresh: boolean
  /** Whether it was published on the revocation topic. */
  spread: boolean
}

/**
 * The capability service behaviours use (`needs: ['caps']`): the daemon's trust anchors and
 * revocations. Every change takes effect (caches dropped) before the returned promise resolves.
 */
export interface CapService {
  /** The context this node authorizes with (`dms`). */
  readonly context: string
  /** Anchors of the node's context, for `/dms/cap/list`. */
  list: () => Promise<AnchorsView>
  /** Adds an anchor (validated: a did:key, or a token with a valid, unexpired chain). */
  addAnchor: (kind: AnchorKind, value: string) => Promise<AnchorsView>
  /** Removes an anchor named by its DID/token text or a token's id; `NotFound` if absent. */
  removeAnchor: (kind: AnchorKind, ref: string) => Promise<AnchorsView>
  /**
   * A revocation signed by the token's issuer, asked for on this node (`dms cap revoke`):
   * verified, stored, the token added to the revoke anchors when carried, and published on
   * `/nunet/revoke`.
   */
  revoke: (record: RevocationRecord) => Promise<RevokeResult>
  /** A revocation heard over gossip: verified and stored (gossipsub does the spreading). */
  receiveRevocation: (record: RevocationRecord) => Promise<{ id: string, fresh: boolean }>
  /**
   * The gossip validator's answer for a revocation heard on `/nunet/revoke`, before it is
   * delivered or forwarded: `reject` a forged record, `ignore` one already held, from an issuer
   * this node knows nothing of, or over its bounds.
   */
  checkRevocation: (record: RevocationRecord) => 'accept' | 'reject' | 'ignore'
}

export interface CapServiceComponents {
  trust: ContextTrust
  revocations: RevocationStore
  /** The actor that publishes revocations; set once the actor system exists. */
  publisher: () => Publisher | undefined
  log?: Logger
}

export function createCapService (c: CapServiceComponents): CapService {
  const log = c.log ?? silentLogger()
  const view = (): AnchorsView => ({ ...anchorsView(c.trust.context, c.trust.anchors, c.trust.selfDid, (id, iss) => c.revocations.has(id, iss)), revocations: c.revocations.size })
  return {
    context: c.trust.context,
    list: async () => view(),
    addAnchor: async (kind, value) => {
      const v = await validateAnchor(kind, value, { subject: c.trust.selfDid })
      await c.trust.mutate(a => withAnchor(a, kind, v))
      return view()
    },
    removeAnchor: async (kind, ref) => {
      await c.trust.mutate(a => withoutAnchor(a, kind, ref))
      return view()
    },
    revoke: async (record) => {
      // asked for by an authorized caller of this node: kept whoever the issuer is
      const fresh = await c.revocations.add(record, { trusted: true })
      if (record.token !== undefined) {
        const token = record.token
        await c.trust.mutate(a => withAnchor(a, 'revoke', token))
      }
      const publisher = c.publisher()
      let spread = false
      if (publisher !== undefined) {
        try {
          await publisher.publish(REVOKE_TOPIC, REVOKE_BROADCAST, { record }, { timeout: REVOKE_PUBLISH_LIFETIME_MS })
          spread = true
        } catch (err) {
          // Recorded here either way; the caller learns it did not spread and may retry.
          log.warn({ err, id: record.revoke }, 'could not publish a revocation')
        }
      }
      return { id: record.revoke, fresh, spread }
    },
    receiveRevocation: async (record) => {
      const fresh = await c.revocations.add(record)
      if (fresh) log.info({ id: record.revoke, iss: record.iss }, 'revocation received')
      return { id: record.revoke, fresh }
    },
    checkRevocation: (record) => c.revocations.check(record)
  }
}
