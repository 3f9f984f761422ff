import { request } from 'node:http'
import { connect } from 'node:net'
import type { Executor, WorkloadRef } from '../executors/types.js'
import type { AllocationPort, HealthCheck } from './spec.js'

/**
 * One health check, bounded by its timeout: `command` runs in the workload (executor.exec) and
 * passes on exit 0 (and, if given, when its output contains the string); `http` GETs a path on
 * the host side of one of the allocation's ports on 127.0.0.1 and passes on 2xx; `tcp` passes
 * when a connection is accepted. Never throws: a failure is a result with a detail.
 */
export interface HealthResult { ok: boolean, detail: string }

/** What of a body is read before the connection is dropped: the status is what counts. */
const MAX_BODY_BYTES = 64 * 1024

export async function runHealthCheck (check: HealthCheck, o: { executor: Executor, ref: WorkloadRef, ports: AllocationPort[] }): Promise<HealthResult> {
  try {
    switch (check.type) {
      case 'command': {
        const r = await o.executor.exec(o.ref, check.command, { timeoutMs: check.timeoutMs })
        if (r.exitCode !== 0) return { ok: false, detail: `${check.command[0]} exited ${r.exitCode}` }
        if (check.contains !== undefined && !r.stdout.includes(check.contains) && !r.stderr.includes(check.contains)) {
          return { ok: false, detail: `output of ${check.command[0]} lacks '${check.contains}'` }
        }
        return { ok: true, detail: `${check.command[0]} exited 0` }
      }
      case 'http':
        return await httpGet(hostPort(o.ports, check.port), check.path, check.timeoutMs)
      case 'tcp':
        return await tcpConnect(hostPort(o.ports, check.port), check.timeoutMs)
    }
  } catch (err) {
    return { ok: false, detail: `${(err as Error).name}: ${(err as Error).message}` }
  }
}

/** The host port of a container port (checked to exist when the spec was parsed). */
function hostPort (ports: AllocationPort[], container: number): number {
  const p = ports.find(x => x.container === container && x.protocol === 'tcp')
  if (p === undefined) throw new Error(`port ${container} is not one of the allocation's`)
  return p.host
}

async function httpGet (port: number, path: string, timeoutMs: number): Promise<HealthResult> {
  return await new Promise<HealthResult>((resolve) => {
    // No agent: one connection per check, closed after it, nothing pooled to outlive the check.
    const req = request({ host: '127.0.0.1', port, path, method: 'GET', agent: false, timeout: timeoutMs }, (res) => {
      const status = res.statusCode ?? 0
      let seen = 0
      res.on('data', (b: Buffer) => { seen += b.length; if (seen > MAX_BODY_BYTES) res.destroy() })
      res.on('error', () => {})
      res.resume()
      req.destroy()
      resolve(status >= 200 && status < 300 ? { ok: true, detail: `GET ${path} → ${status}` } : { ok: false, detail: `GET ${path} → ${status}` })
    })
    req.on('timeout', () => { req.destroy(); resolve({ ok: false, detail: `GET ${path}: no answer within ${timeoutMs} ms` }) })
    req.on('error', (err) => { resolve({ ok: false, detail: `GET ${path}: ${(err as NodeJS.ErrnoException).code ?? err.message}` }) })
    req.end()
  })
}

async function tcpConnect (port: number, timeoutMs: number): Promise<HealthResult> {
  return await new Promise<HealthResult>((resolve) => {
    const socket = connect({ host: '127.0.0.1', port })
    const timer = setTimeout(() => { socket.destroy(); resolve({ ok: false, detail: `tcp ${port}: no connection within ${timeoutMs} ms` }) }, timeoutMs)
    socket.once('connect', () => { clearTimeout(timer); socket.destroy(); resolve({ ok: true, detail: `tcp ${port} accepted` }) })
    socket.once('error', (err: NodeJS.ErrnoException) => { clearTimeout(timer); resolve({ ok: false, detail: `tcp ${port}: ${err.code ?? err.message}` }) })
  })
}
