// Peer and hello behaviours (network area). Each entry is one file's default export.
import broadcastHello from '../../broadcast/hello.js'
import publicHello from '../../public/hello.js'
import connect from './connect.js'
import dht from './dht.js'
import list from './list.js'
import ping from './ping.js'
import score from './score.js'
import self from './self.js'

export const peerBehaviors = [list, self, ping, connect, dht, score, publicHello, broadcastHello] as const
