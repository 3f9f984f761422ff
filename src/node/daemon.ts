import '../lib/polyfill.js'
import { mkdir, rm, writeFile, rename } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { startApi, type ApiServer } from '../api/server.js'
import { readDaemonInfo, type DaemonInfo } from '../api/client.js'
import { Keystore } from '../identity/keystore.js'
import { getPassphrase } from '../identity/passphrase.js'
import { Conflict, InvalidConfig, isDmsError, type DmsError } from '../lib/errors.js'
import { createLogger, type Logger } from '../lib/log.js'
import { loadConfig, type ConfigInput } from './config.js'
import { createNode, type Node } from './create-node.js'
import { lockDataDir, type DataDirLock } from './data-dir-lock.js'
import { INIT_LOCK_WAIT_MS, initDataDir } from './init.js'

/** SIGINT/SIGTERM: exit 0 within this bound even if some part hangs while stopping. */
const STOP_DEADLINE_MS = 4_500

export async function runDaemon (opts: { dataDir: string, flags: ConfigInput, passphrase?: () => Promise<string> }): Promise<void> {
  const t0 = performance.now()
  const dataDir = resolve(opts.dataDir)
  await mkdir(dataDir, { recursive: true, mode: 0o700 })
  // Held for the daemon's life: a second `dms run` on this dir is refused at once; a `dms init`
  // setting the dir up is waited for. Released on exit; a kill -9 leaves it to be taken over.
  const lock = await lockDataDir(dataDir, 'run', { waitMs: INIT_LOCK_WAIT_MS }).catch(async (err: unknown) => {
    throw isDmsError(err, 'Conflict') && err.fields.purpose === 'run' ? await alreadyRunning(dataDir, err) : err
  })
  process.on('exit', () => { lock.releaseSync() })
  const infoPath = join(dataDir, 'daemon.json')
  const { log, node, api, info } = await start(dataDir, opts.flags, lock, infoPath, opts.passphrase ?? (async () => await getPassphrase('unlock the node keys'))).catch(async (err: unknown) => {
    await lock.release()
    throw err
  })
  // `node`: the runtime's version, so that a log (and CI, which runs the daemons on Node 20 and
  // on 24) shows which Node a daemon really ran on. Local only: /public/status does not tell peers.
  log.info({ peerId: info.peerId, did: info.did, addrs: info.addrs, api: info.api, node: process.version, readyMs: Math.round(performance.now() - t0) }, 'dms node ready')
  // `dms run --detach` waits on this channel (when there is one) rather than on a file
  if (process.send !== undefined) {
    process.send({ ready: info })
    process.disconnect?.()
  }

  let stopping = false
  const stop = (signal: string): void => {
    if (stopping) return
    stopping = true
    log.info({ signal }, 'stopping')
    setTimeout(() => {
      log.warn('stop took too long; exiting anyway')
      process.exit(0)
    }, STOP_DEADLINE_MS).unref()
    void (async () => {
      await rm(infoPath, { force: true })
      await api.close().catch(() => {})
      await node.stop()
      await lock.release()
      log.info('stopped')
      log.flush?.()
      process.exit(0)
    })()
  }
  // A stray rejection (libp2p rejects aborted stream operations no one awaits) must not take the
  // node down with everyone's work: log it loudly and keep serving. An uncaught exception leaves
  // state unknown: log it and exit non-zero so a supervisor restarts the node.
  process.on('unhandledRejection', (reason) => { log.error({ err: reason }, 'unhandled rejection (the node keeps running)') })
  process.on('uncaughtException', (err) => {
    log.fatal({ err }, 'uncaught exception: exiting')
    log.flush?.()
    process.exit(1)
  })
  process.on('SIGINT', () => { stop('SIGINT') })
  process.on('SIGTERM', () => { stop('SIGTERM') })
}

/** Everything from configuration to daemon.json, under the data dir lock the caller holds. */
async function start (dataDir: string, flags: ConfigInput, lock: DataDirLock, infoPath: string, askPassphrase: () => Promise<string>): Promise<{ log: Logger, node: Node, api: ApiServer, info: DaemonInfo }> {
  const config = await loadConfig(dataDir, flags)
  const log = createLogger('dms', config.logLevel)
  const passphrase = await askPassphrase()
  const init = await initDataDir(dataDir, passphrase, { lock })
  if (init.created.length > 0) log.info({ created: init.created, user: init.user }, 'created keys on first run; the user key is a root of this node')
  const identity = await new Keystore(dataDir).load('dms', passphrase)

  let node: Node
  try {
    node = await createNode({ dataDir, identity, config, log })
  } catch (err) {
    throw busyPort(err, () => new InvalidConfig(`cannot listen on ${config.listen.join(', ')}: the address is in use (another dms daemon?); choose another with --listen (or DMS_LISTEN, config.json "listen")`, { field: 'listen' }))
  }
  let api: ApiServer
  try {
    api = await startApi(node, { port: config.apiPort, maxBodyBytes: config.maxFrameBytes, log: log.child({ part: 'api' }) })
  } catch (err) {
    await node.stop()
    throw busyPort(err, () => new InvalidConfig(`the API port ${config.apiPort} on 127.0.0.1 is in use (another dms daemon?); choose another with --api-port (0 = any free port; or DMS_API_PORT)`, { field: 'apiPort' }))
  }
  const info: DaemonInfo = { peerId: node.peerId, did: node.did, addrs: node.addrs(), api: api.url, pid: process.pid }
  await writeFile(`${infoPath}.tmp`, JSON.stringify(info, null, 2) + '\n', { mode: 0o600 })
  await rename(`${infoPath}.tmp`, infoPath)
  return { log, node, api, info }
}

/**
 * A busy port as one line naming the setting to change, instead of `EADDRINUSE` or a libp2p stack
 * trace (libp2p wraps the socket error, so the chain of causes and the text are both searched).
 */
function busyPort (err: unknown, replacement: () => Error): unknown {
  for (let e = err, i = 0; e instanceof Error && i < 8; e = (e as { cause?: unknown }).cause, i++) {
    if ((e as NodeJS.ErrnoException).code === 'EADDRINUSE' || /EADDRINUSE/.test(e.message)) return replacement()
    const errors = (e as { errors?: unknown[] }).errors
    if (Array.isArray(errors) && errors.some(x => x instanceof Error && ((x as NodeJS.ErrnoException).code === 'EADDRINUSE' || /EADDRINUSE/.test(x.message)))) return replacement()
  }
  return err
}

/** The refusal of a second `dms run`, naming the running daemon's API when it has written it. */
async function alreadyRunning (dataDir: string, err: DmsError): Promise<DmsError> {
  try {
    const running = await readDaemonInfo(dataDir)
    return new Conflict(`a daemon (pid ${running.pid}) already runs on ${dataDir}; its API is ${running.api}`, err.fields)
  } catch {
    return err
  }
}
