import { faultsUnavailable } from '../e2e/netns.js'

/**
 * What every fault scenario shares. They need root, iproute2 and iptables (network namespaces
 * and the faults injected into them). CI runs as root with both installed (.ci/run) and must not
 * skip them: under CI=true a missing prerequisite fails the file; elsewhere it skips, saying why.
 */
export const unavailable = await faultsUnavailable()
if (unavailable !== undefined && process.env.CI !== undefined) throw new Error(`the fault-injection suite cannot run in CI: ${unavailable}`)
export const skipNote = unavailable !== undefined ? ` (skipped: ${unavailable})` : ''

/** A promise and the function that settles it: a gate the test opens when an event happened. */
export function gate (): { promise: Promise<void>, open: () => void } {
  let open!: () => void
  const promise = new Promise<void>(resolve => { open = resolve })
  return { promise, open }
}

/** Resolves after `ms`: the length of a fault (a partition held for its drawn duration), never a wait for an event. */
export async function hold (ms: number): Promise<void> {
  await new Promise(resolve => setTimeout(resolve, ms))
}
