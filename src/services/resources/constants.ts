/**
 * How often expired reservations are swept from the ledger. Expiry itself is exact without the
 * sweep (an expired reservation stops counting the moment its time passes, see `free`); the
 * sweep only deletes the records, so a few seconds of lag cost nothing but a little disk.
 */
export const DEFAULT_SWEEP_INTERVAL_MS = 5_000

/**
 * Longest a reservation may be held. A reservation is the promise a bid makes between "I can"
 * and the orchestrator's commit; deployments commit within seconds to minutes. An hour bounds
 * what a caller that vanished can hold hostage.
 */
export const MAX_RESERVATION_TTL_MS = 3_600_000

/** Sublevel of the node's db holding the ledger (onboarded, reservations, allocations). */
export const LEDGER_SUBLEVEL = 'ledger'
