import type { AllocationPort } from './spec.js'

/** The standard PATH (Debian's, and dash's default): never the daemon's own. */
export const STANDARD_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

/**
 * The whole environment of a workload, built from nothing: the spec's variables, then
 * `DMS_ALLOCATION_ID`, `DMS_PORT_<container>=<host>` per tcp port (`DMS_PORT_<container>_UDP` per
 * udp port) and `DMS_PORTS` (the host ports, comma-separated, in the spec's order). Nothing of the
 * daemon's environment (no `DMS_*` setting, never the passphrase) is ever copied in.
 *
 * `defaultPath`: PATH is the standard one unless the spec sets it (process executor). A
 * container keeps its image's PATH instead (docker: false).
 */
export function workloadEnv (specEnv: Record<string, string>, allocationId: string, ports: AllocationPort[], opts: { defaultPath: boolean }): Record<string, string> {
  const env: Record<string, string> = {}
  if (opts.defaultPath && specEnv.PATH === undefined) env.PATH = STANDARD_PATH
  Object.assign(env, specEnv)
  env.DMS_ALLOCATION_ID = allocationId
  for (const p of ports) env[`DMS_PORT_${p.container}${p.protocol === 'udp' ? '_UDP' : ''}`] = String(p.host)
  env.DMS_PORTS = ports.map(p => p.host).join(',')
  return env
}
