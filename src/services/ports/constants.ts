/**
 * Default range the allocator hands out (ARCHITECTURE.md defaults): above the well-known and
 * registered ports most services bind (< 16384), up to the last TCP port.
 */
export const DEFAULT_PORT_RANGE = { min: 16384, max: 65535 } as const

/**
 * Most candidate ports one dynamic request tries on the OS before giving up. Each try is a
 * bind/close on a few addresses (well under a millisecond); a range this full of foreign
 * listeners is a misconfiguration worth an error rather than a scan of 49k ports.
 */
export const MAX_PROBES_PER_REQUEST = 2048

/** Most ports one request may take: bounds the batch and the probing work of one call. */
export const MAX_PORTS_PER_REQUEST = 256

/**
 * Addresses a port must be bindable on to count as free: the wildcard (a workload usually
 * listens there) and loopback (a local service may hold just that), plus the IPv6 wildcard
 * where the host has IPv6 (dual-stack listeners hold both families).
 */
export const PROBE_HOSTS = ['0.0.0.0', '127.0.0.1', '::'] as const

export const PORTS_SUBLEVEL = 'ports'
