import type { Command } from 'commander'
import { assertNodeDid, callBehavior, parseNode } from '../call.js'
import { ago, dim, emit, globalsFrom, green, table, withCommon, type OutputOpts } from '../common.js'

interface CommonOpts extends OutputOpts { dataDir?: string, context?: string, timeout?: string }
interface PeerView { id: string, did?: string, addrs: string[], connected: boolean, lastHelloAt?: string }

function peersTable (v: { peers: PeerView[] }): string {
  return table(['PEER ID', 'CONNECTED', 'DID', 'LAST HELLO', 'ADDRESS'],
    v.peers.map(p => [p.id, p.connected ? green('yes') : 'no', p.did ?? dim('?'), p.lastHelloAt !== undefined ? ago(p.lastHelloAt) : dim('never'), p.addrs[0] ?? '']))
}

/** `dms peers [list|self|ping|connect]`: the common questions about the network, asked of the local node. */
export function register (program: Command): void {
  const peers = program.command('peers').description('the peers of the local node: list (default), self, ping, connect (needs a running daemon and the user key)')

  withCommon(peers.command('list', { isDefault: true }))
    .description('peers this node knows: PeerId, whether connected, DID learned from hello, addresses')
    .action(async (o: CommonOpts) => {
      emit(o, await callBehavior<{ peers: PeerView[] }>(globalsFrom(o), '/dms/node/peers/list', {}), peersTable)
    })

  withCommon(peers.command('self'))
    .description('this node: PeerId, DID and listening addresses')
    .action(async (o: CommonOpts) => {
      emit(o, await callBehavior<{ id: string, did: string, addrs: string[] }>(globalsFrom(o), '/dms/node/peers/self', {}),
        v => [`peer id  ${v.id}`, `did      ${v.did}`, ...v.addrs.map(a => `addr     ${a}`)].join('\n'))
    })

  withCommon(peers.command('ping <peer>'))
    .description('round-trip time to a peer, named by its PeerId or its node DID')
    .action(async (peer: string, o: CommonOpts) => {
      const g = globalsFrom(o)
      const { peerId, did } = parseNode(peer, '<peer>')
      await assertNodeDid(g, did, '<peer>')
      emit(o, await callBehavior<{ rttMs: number }>(g, '/dms/node/peers/ping', { peer: peerId }), v => `${peerId}: ${v.rttMs} ms`)
    })

  withCommon(peers.command('connect <multiaddr>'))
    .description('dial a peer at a multiaddr ending in /p2p/<peer id>')
    .action(async (address: string, o: CommonOpts) => {
      emit(o, await callBehavior<{ id: string, connected: boolean }>(globalsFrom(o), '/dms/node/peers/connect', { address }),
        v => `${v.connected ? green('connected') : 'not connected'}  ${v.id}`)
    })
}
