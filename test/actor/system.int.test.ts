import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createNetwork, type Network } from '../../src/network/index.js'
import { silentLogger } from '../../src/lib/log.js'
import { openDb, type Db } from '../../src/store/db.js'
import { actorSystemContract } from './system-contract.js'

// The same contract as the in-process transport, over real libp2p hosts on loopback.
actorSystemContract('libp2p on loopback', {
  make: async (ids, opts) => {
    const dir = await mkdtemp(join(tmpdir(), 'dms-actor-int-'))
    const dbs: Db[] = []
    const nets: Network[] = []
    for (const [i, identity] of ids.entries()) {
      const db = await openDb(join(dir, `db${i}`))
      dbs.push(db)
      const net = await createNetwork({ listen: ['/ip4/127.0.0.1/tcp/0'], mdns: false, maxFrameBytes: opts?.maxFrameBytes?.[i] }, { identity, db, log: silentLogger() })
      net.setHelloCallbacks({ announce: async () => {}, greet: async () => {} })
      nets.push(net)
    }
    return {
      transports: nets.map(n => n.transport),
      close: async () => {
        for (const n of nets) await n.stop()
        for (const d of dbs) await d.close()
        await rm(dir, { recursive: true, force: true })
      },
      // the actor systems set their receivers first; then the hosts start and meet
      start: async () => {
        for (const n of nets) await n.start()
        for (const n of nets.slice(1)) await nets[0].peers.connect(n.addrs()[0], AbortSignal.timeout(10_000))
        await nets[1].peers.connect(nets[2]?.addrs()[0] ?? nets[0].addrs()[0], AbortSignal.timeout(10_000))
      }
    }
  }
})
