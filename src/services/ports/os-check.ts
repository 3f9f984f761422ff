import { createServer } from 'node:net'
import { PROBE_HOSTS } from './constants.js'

/**
 * Whether no other socket on this machine listens on `port` (TCP), by binding it on each probe
 * address in turn and closing at once. It is a check, not a hold: another process may bind the
 * port between the probe and the workload's own bind; the ledger entry keeps dms itself from
 * handing the port out twice, which is the part dms controls.
 */
export async function isPortFreeOnOs (port: number): Promise<boolean> {
  for (const host of PROBE_HOSTS) {
    const r = await tryBind(port, host)
    if (r === 'busy') return false
  }
  return true
}

async function tryBind (port: number, host: string): Promise<'free' | 'busy' | 'n/a'> {
  return await new Promise(resolve => {
    const server = createServer()
    server.unref()
    server.once('error', (err: NodeJS.ErrnoException) => {
      // No IPv6 on this host (or that address family): nothing can hold the port there.
      if (err.code === 'EAFNOSUPPORT' || err.code === 'EADDRNOTAVAIL') resolve('n/a')
      else resolve('busy')
    })
    // exclusive: do not share a handle with cluster workers; ipv6Only keeps '::' from also
    // binding IPv4 so that probe answers only for IPv6 (IPv4 was probed on its own).
    server.listen({ port, host, exclusive: true, ipv6Only: host === '::' }, () => {
      server.close(() => { resolve('free') })
    })
  })
}
