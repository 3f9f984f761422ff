import { isDmsError } from '../../lib/errors.js'
import { formatSize } from '../../lib/units.js'
import type { Identity } from '../../identity/identity.js'
import { verifyWithDid, peerIdFromDid } from '../../identity/did.js'
import type { ExecutorStatus } from '../executors/index.js'
import type { NodeStateService } from '../node-state/index.js'
import type { PortAllocator } from '../ports/index.js'
import { isPortFreeOnOs } from '../ports/index.js'
import type { ResourceManager } from '../resources/index.js'
import type { Bid, BidRequest, DirectReply, NodeAsk } from './schemas.js'

/**
 * The provider's half of bidding: for each node of a bid request, a signed bid when this node can
 * run it now, or the reason it cannot, in words the deployer acts on. A provider bids only when it
 * is `ready`, onboarded, has the executors, the free resources and the static ports, and its
 * labels and location are what the node asks. A bid is a promise to try, not a reservation: the
 * commit reserves (and may still be refused when two deployments race for the same resources).
 */
export interface BidderComponents {
  identity: Identity
  resources: ResourceManager
  ports: PortAllocator
  nodeState: NodeStateService
  executors: () => ExecutorStatus[]
}

const encoder = new TextEncoder()

/** The bytes a bid's signature covers: the ensemble, the node and the provider, nothing to reuse elsewhere. */
export function bidBytes (ensembleId: string, node: string, peer: string): Uint8Array {
  return encoder.encode(`dms-bid/1\n${ensembleId}\n${node}\n${peer}`)
}

/** Whether `bid` was signed by the node it names (its DID and PeerId are the same key). */
export function verifyBid (bid: Bid): boolean {
  try {
    if (peerIdFromDid(bid.did) !== bid.peer) return false
    return verifyWithDid(bid.did, bidBytes(bid.ensembleId, bid.node, bid.peer), Buffer.from(bid.signature, 'base64url'))
  } catch {
    return false
  }
}

export async function evaluateBidRequest (c: BidderComponents, req: BidRequest): Promise<DirectReply> {
  const out: DirectReply = { bids: [], refusals: [] }
  for (const node of req.nodes) {
    const reason = await whyNot(c, node)
    if (reason !== undefined) {
      out.refusals.push({ node: node.name, reason })
      continue
    }
    const peer = c.identity.peerId
    out.bids.push({
      ensembleId: req.ensembleId,
      node: node.name,
      peer,
      did: c.identity.did,
      signature: Buffer.from(c.identity.sign(bidBytes(req.ensembleId, node.name, peer))).toString('base64url')
    })
  }
  return out
}

async function whyNot (c: BidderComponents, node: NodeAsk): Promise<string | undefined> {
  const state = c.nodeState.get()
  const refusal = c.nodeState.refusal('new')
  if (refusal !== null) return `node is ${state.state}: ${refusal}`
  const executors = c.executors()
  for (const name of node.executors) {
    const s = executors.find(e => e.name === name)
    if (s === undefined || !s.available) return `no ${name} executor${s !== undefined && !s.available ? ` (${s.reason})` : ''}`
  }
  for (const [key, want] of Object.entries(node.labels)) {
    const have = state.labels[key]
    if (have !== want) return have === undefined ? `no label ${key} (wanted ${key}=${want})` : `label ${key}=${have}, wanted ${key}=${want}`
  }
  if (node.location !== undefined) {
    const where = state.labels.location
    const within = (prefix: string): boolean => where !== undefined && (where === prefix || where.startsWith(prefix.endsWith('/') ? prefix : `${prefix}/`))
    if (node.location.accept.length > 0 && !node.location.accept.some(within)) return where === undefined ? `no location label (accepted: ${node.location.accept.join(', ')})` : `location ${where} is not accepted (${node.location.accept.join(', ')})`
    const rejected = node.location.reject.find(within)
    if (rejected !== undefined) return `location ${where ?? ''} is rejected (${rejected})`
  }
  try {
    c.resources.check(node.resources)
  } catch (err) {
    if (isDmsError(err)) return `${err.message}`
    throw err
  }
  const leased = new Set(c.ports.list().map(l => l.port))
  for (const p of node.ports) {
    if (p.public === undefined) continue
    if (p.public < c.ports.range.min || p.public > c.ports.range.max) return `port ${p.public} is outside this node's port range ${c.ports.range.min}–${c.ports.range.max}`
    if (leased.has(p.public)) return `port ${p.public} is leased to another allocation`
    if (!await isPortFreeOnOs(p.public)) return `port ${p.public} is in use on the machine`
  }
  return undefined
}

/** `ram 1 GiB` and the like, for explanations. */
export function describeResources (r: NodeAsk['resources']): string {
  const parts = [`cpu ${r.cpuCores}`, `ram ${formatSize(r.ramBytes)}`, `disk ${formatSize(r.diskBytes)}`]
  if (r.gpus.length > 0) parts.push(`${r.gpus.length} gpu`)
  return parts.join(', ')
}
