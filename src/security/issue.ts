import { isDid } from '../identity/did.js'
import type { Identity } from '../identity/identity.js'
import { InvalidArgument } from '../lib/errors.js'
import { parseDuration } from '../lib/units.js'
import type { VerifiedChain } from './chain.js'
import { MAX_CHAIN_LINKS, MAX_GRANTS } from './constants.js'
import { assertPath, firstWidened } from './paths.js'
import { unauthorized } from './reasons.js'
import { issueToken } from './ucan.js'

/** What `dms cap grant` / `dms cap delegate` ask for. */
export interface GrantRequest {
  /** Who the token is issued to (UCAN `aud`). */
  subject: string
  caps: readonly string[]
  topics?: readonly string[]
  /** The node the token may be used on (`--audience`). */
  node?: string
  /** Further delegations allowed below the new token (`--depth`). */
  depth?: number
  /** Expiry, unix seconds. */
  exp: number
}

export type SelfSign = 'no' | 'also' | 'only'

/** Expiry in unix seconds from `--expiry <RFC3339>` or `--duration <1h|7d…>` (exactly one). */
export function expiryFrom (opts: { expiry?: string, duration?: string }, now = Date.now()): number {
  if ((opts.expiry === undefined) === (opts.duration === undefined)) throw new InvalidArgument('give exactly one of --expiry <RFC3339 time> or --duration <e.g. 1h, 7d>')
  let ms: number
  if (opts.expiry !== undefined) {
    // RFC 3339 needs a zone: a bare local time would mean different instants on different nodes.
    if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/i.test(opts.expiry)) throw new InvalidArgument(`not an RFC 3339 time with a zone: '${opts.expiry}' (example: 2030-01-31T12:00:00Z)`)
    ms = Date.parse(opts.expiry)
    if (Number.isNaN(ms)) throw new InvalidArgument(`not a valid time: '${opts.expiry}'`)
  } else {
    ms = now + parseDuration(opts.duration as string, '--duration')
  }
  if (ms <= now) throw new InvalidArgument('the expiry is in the past')
  return Math.floor(ms / 1000)
}

function checkRequest (req: GrantRequest): void {
  if (!isDid(req.subject)) throw new InvalidArgument(`the subject must be an Ed25519 did:key, got '${req.subject.slice(0, 80)}'`)
  if (req.node !== undefined && !isDid(req.node)) throw new InvalidArgument(`--audience must be a node's did:key, got '${req.node.slice(0, 80)}'`)
  if (req.caps.length + (req.topics?.length ?? 0) === 0) throw new InvalidArgument('grant at least one --cap or --topic')
  if (req.caps.length + (req.topics?.length ?? 0) > MAX_GRANTS) throw new InvalidArgument(`at most ${MAX_GRANTS} capabilities and topics per token`)
  for (const c of req.caps) assertPath(c, 'capability')
  for (const t of req.topics ?? []) assertPath(t, 'topic')
  if (req.depth !== undefined && !(Number.isInteger(req.depth) && req.depth >= 0 && req.depth < MAX_CHAIN_LINKS)) {
    throw new InvalidArgument(`--depth is an integer from 0 to ${MAX_CHAIN_LINKS - 1}`)
  }
}

/** A root token from `issuer` (no proof): what a context grants on its own authority. */
export async function grantToken (issuer: Identity, req: GrantRequest): Promise<string> {
  checkRequest(req)
  return await issueToken(issuer, { audience: req.subject, caps: req.caps, topics: req.topics, node: req.node, depth: req.depth, exp: req.exp })
}

/** Why `parent` cannot carry the delegation `req`, or undefined when it can. */
function unfit (parent: VerifiedChain, req: GrantRequest, now: number): string | undefined {
  const g = parent.links[0].grant
  if (parent.expiresAt * 1000 <= now) return 'it has expired'
  if (parent.notBefore !== undefined && parent.notBefore * 1000 > now) return 'it is not valid yet'
  const cap = firstWidened(g.caps, req.caps)
  if (cap !== undefined) return `it does not grant ${cap}`
  const topic = firstWidened(g.topics, req.topics ?? [])
  if (topic !== undefined) return `it does not grant topic ${topic}`
  if (req.exp > parent.expiresAt) return `it expires at ${new Date(parent.expiresAt * 1000).toISOString()}, before the requested expiry`
  if (g.node !== undefined && req.node !== undefined && req.node !== g.node) return `it may only be used on node ${g.node}`
  if (g.depth === 0) return 'it may not be delegated further (depth 0)'
  if (g.depth !== undefined && req.depth !== undefined && req.depth > g.depth - 1) return `it allows depth ${g.depth - 1} below the new token at most`
  return undefined
}

/**
 * Delegates from the provide anchors `held` (tokens issued to `issuer`): the new token chains on
 * the shortest, then freshest, held token that covers the whole request, and inherits its target
 * node and remaining depth. `selfSign` adds (`also`) or substitutes (`only`) a root token from
 * `issuer` itself, for receivers that trust `issuer` directly. Refuses to delegate more than is
 * held: `Unauthorized` with reason `not-held`, saying why each held token does not fit.
 */
export async function delegateTokens (issuer: Identity, held: readonly VerifiedChain[], req: GrantRequest, selfSign: SelfSign = 'no', now = Date.now()): Promise<string[]> {
  checkRequest(req)
  const out: string[] = []
  if (selfSign !== 'only') {
    const mine = held.filter(c => c.links[0].payload.aud === issuer.did)
    const fitting = mine.filter(c => unfit(c, req, now) === undefined)
      .sort((a, b) => a.links.length - b.links.length || b.expiresAt - a.expiresAt)
    const parent = fitting[0]
    if (parent === undefined) {
      const why = mine.map(c => `token ${c.ids[0].slice(0, 16)}…: ${unfit(c, req, now) ?? ''}`)
      throw unauthorized('not-held', mine.length === 0
        ? `${issuer.did} holds no provide token to delegate from (add one with 'dms cap anchor --provide <token>')`
        : `no held token covers the delegation: ${why.slice(0, 5).join('; ')}`)
    }
    const g = parent.links[0].grant
    out.push(await issueToken(issuer, {
      audience: req.subject,
      caps: req.caps,
      topics: req.topics,
      node: g.node ?? req.node,
      depth: req.depth ?? (g.depth !== undefined ? g.depth - 1 : undefined),
      exp: req.exp,
      nbf: parent.notBefore,
      proof: parent.links[0].jwt
    }))
  }
  if (selfSign !== 'no') out.push(await grantToken(issuer, req))
  return out
}
