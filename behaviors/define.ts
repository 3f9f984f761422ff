import type { z } from 'zod'
import type { BehaviorDeclaration } from '../src/actor/behavior.js'
import type { Services } from './services.js'

/**
 * Declares one behaviour (one file per path). The identity function exists for its types: the
 * handler's first argument is exactly the services named in `needs`.
 */
export function defineBehavior<const N extends keyof Services, Req extends z.ZodType, Res extends z.ZodType> (
  decl: BehaviorDeclaration<Services, N, Req, Res>
): BehaviorDeclaration<Services, N, Req, Res> {
  return decl
}
