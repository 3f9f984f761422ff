import { z } from 'zod'
import { EXECUTOR_NAMES } from '../executors/types.js'
import { GpuRequestSchema } from '../resources/vector.js'
import { HandleSchema } from '../provider/schemas.js'

/**
 * The wire and disk shapes of deployments (specs/deployments.md). Requests are strict: an unknown
 * field is refused by name.
 */

export const STATUSES = ['Preparing', 'Committing', 'Provisioning', 'Running', 'ShuttingDown', 'Completed', 'Failed'] as const
export type DeploymentStatus = typeof STATUSES[number]
export const isFinal = (s: DeploymentStatus): boolean => s === 'Completed' || s === 'Failed'

const Resources = z.object({ cpuCores: z.number().nonnegative(), ramBytes: z.number().int().nonnegative(), diskBytes: z.number().int().nonnegative(), gpus: z.array(GpuRequestSchema) })
const PortWant = z.strictObject({ public: z.number().int().min(1).max(65535).optional(), private: z.number().int().min(1).max(65535), allocation: z.string(), protocol: z.enum(['tcp', 'udp']) })

/** What one ensemble node asks of a provider (summed over its allocations). */
export const NodeAsk = z.strictObject({
  name: z.string().min(1).max(64),
  resources: Resources,
  executors: z.array(z.enum(EXECUTOR_NAMES)).max(EXECUTOR_NAMES.length),
  ports: z.array(PortWant).max(64),
  labels: z.record(z.string(), z.string()),
  location: z.strictObject({ accept: z.array(z.string()), reject: z.array(z.string()) }).optional()
})
export type NodeAsk = z.infer<typeof NodeAsk>

/** A bid request: broadcast on /nunet/deployment, or asked of one provider directly. */
export const BidRequest = z.strictObject({
  ensembleId: z.string().min(1).max(64),
  /** Where bids go (`/dms/deployment/bid` on this handle). */
  orchestrator: HandleSchema,
  nodes: z.array(NodeAsk).min(1).max(64)
})
export type BidRequest = z.infer<typeof BidRequest>

/** A provider's offer to run one ensemble node, signed by the provider's node key. */
export const Bid = z.strictObject({
  ensembleId: z.string(),
  node: z.string(),
  peer: z.string(),
  did: z.string(),
  /** base64url Ed25519 signature of `bidBytes(ensembleId, node, peer)` by `did`. */
  signature: z.string()
})
export type Bid = z.infer<typeof Bid>

/** What a provider says about one node it will not bid for, in words a person acts on. */
export const Refusal = z.object({ node: z.string(), reason: z.string() })

export const BidSubmission = z.strictObject({ ensembleId: z.string(), bids: z.array(Bid).max(64) })
export const DirectReply = z.object({ bids: z.array(Bid), refusals: z.array(Refusal) })
export type DirectReply = z.infer<typeof DirectReply>

export const Transition = z.object({ at: z.number(), status: z.enum(STATUSES), reason: z.string() })

/** One allocation of a deployment as the orchestrator knows it. */
export const PlacedAllocation = z.object({
  name: z.string(),
  node: z.string(),
  peer: z.string().optional(),
  /** Its id on the provider (`<ensembleId>.<name>`). */
  id: z.string().optional(),
  handle: HandleSchema.optional(),
  status: z.string(),
  ports: z.array(z.object({ private: z.number(), public: z.number(), protocol: z.enum(['tcp', 'udp']) })).default([]),
  /** Restarts and re-placements made by the orchestrator. */
  restarts: z.number().int().nonnegative().default(0)
})
export type PlacedAllocation = z.infer<typeof PlacedAllocation>

export const DeploymentRecord = z.object({
  ensembleId: z.string(),
  /** The DID that asked for it: the controller of its orchestrator actor. */
  owner: z.string(),
  /** The ensemble as parsed (src/services/orchestrator/ensemble-types.ts). */
  ensemble: z.record(z.string(), z.unknown()),
  status: z.enum(STATUSES),
  reason: z.string(),
  createdAt: z.number(),
  /** Unix ms by which it must be Running (or Completed). */
  deadline: z.number(),
  colocate: z.boolean(),
  bidWindowMs: z.number(),
  transitions: z.array(Transition),
  transitionCount: z.number().int(),
  /** Ensemble node → the provider it was placed on. */
  placement: z.record(z.string(), z.object({ peer: z.string(), did: z.string() })),
  allocations: z.record(z.string(), PlacedAllocation),
  /** Providers not to place on again (failed a commit or were lost), by peer. */
  excluded: z.array(z.string()),
  /** When the orchestrator restarted or re-placed something (unix ms), for the supervisor's window. */
  restartTimes: z.array(z.number())
})
export type DeploymentRecord = z.infer<typeof DeploymentRecord>

/** What `deployment/status` and `dms deploy` show. */
export const DeploymentView = z.object({
  ensembleId: z.string(),
  status: z.enum(STATUSES),
  reason: z.string(),
  owner: z.string(),
  orchestrator: HandleSchema.optional(),
  createdAt: z.string(),
  deadline: z.string(),
  transitions: z.array(z.object({ at: z.string(), status: z.enum(STATUSES), reason: z.string() })),
  transitionCount: z.number().int(),
  allocations: z.record(z.string(), z.object({ node: z.string(), peer: z.string().optional(), id: z.string().optional(), status: z.string(), restarts: z.number().int(), ports: z.array(z.object({ private: z.number(), public: z.number(), protocol: z.enum(['tcp', 'udp']) })) }))
})
export type DeploymentView = z.infer<typeof DeploymentView>
