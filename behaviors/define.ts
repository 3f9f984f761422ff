import type { z } from 'zod'
import type { BehaviorDeclaration } from '../src/actor/behavior.js'
import type { CallInfo } from '../src/actor/behavior.js'
import type { AllocationServices, OrchestratorServices, Services } from './services.js'

/**
 * Declares one behaviour (one file per path). The identity function exists for its types: the
 * handler's first argument is exactly the services named in `needs`.
 */
export function defineBehavior<const N extends keyof Services, Req extends z.ZodType, Res extends z.ZodType> (
  decl: BehaviorDeclaration<Services, N, Req, Res>
): BehaviorDeclaration<Services, N, Req, Res> {
  return decl
}

/** Declares a behaviour of allocation actors (`/dms/allocation/*`): their services are their own allocation. */
export function defineAllocationBehavior<const N extends keyof AllocationServices, Req extends z.ZodType, Res extends z.ZodType> (
  decl: BehaviorDeclaration<AllocationServices, N, Req, Res>
): BehaviorDeclaration<AllocationServices, N, Req, Res> {
  return decl
}

/** Declares a behaviour of orchestrator actors (`orch/<ensembleId>`): their services are their own deployment. */
export function defineOrchestratorBehavior<const N extends keyof OrchestratorServices, Req extends z.ZodType, Res extends z.ZodType> (
  decl: BehaviorDeclaration<OrchestratorServices, N, Req, Res>
): BehaviorDeclaration<OrchestratorServices, N, Req, Res> {
  return decl
}

/**
 * For a long poll: a signal that aborts early enough (a tenth of the time left, at most 1 s before
 * the deadline) for the answer to still reach the caller, who gives up at the deadline itself.
 */
export function pollSignal (call: CallInfo): AbortSignal {
  const left = call.envelope.exp - Date.now()
  // an integer: AbortSignal.timeout refuses a fractional delay (ERR_OUT_OF_RANGE)
  return AbortSignal.timeout(Math.max(0, Math.floor(left - Math.min(1_000, left / 10))))
}
