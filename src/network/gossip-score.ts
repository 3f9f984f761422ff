import type { PeerScoreParams, PeerScoreThresholds, TopicScoreParams } from '@libp2p/gossipsub/score'
import { createTopicScoreParams, validateTopicScoreParams } from '@libp2p/gossipsub/score'
import {
  GOSSIP_GOSSIP_THRESHOLD, GOSSIP_GRAYLIST_THRESHOLD, GOSSIP_INVALID_MESSAGE_DECAY, GOSSIP_INVALID_MESSAGE_WEIGHT,
  GOSSIP_PUBLISH_THRESHOLD, LOOPBACK_IPS
} from './constants.js'

/**
 * Gossipsub peer scoring for dms. What dms gossips (hello every 30 s per node, revocations,
 * deployment requests) is sparse, so the score rests on two things only:
 *
 * - P4, invalid messages: every message a topic validator rejects (malformed, forged, badly
 *   signed: see FrameReceiver.validateGossip) counts against the peer that sent it, squared and
 *   slowly forgotten. A few put the peer below the gossip threshold, about ten graylist it.
 * - P5, the application score: the hello handshake (hello.ts), which only ever raises it.
 *
 * Deliberately off: P3 and P3b, mesh delivery rates. gossipsub's defaults expect 20 messages
 * per decay window from every mesh peer and penalise the deficit squared; on topics as quiet as
 * hello every honest mesh peer would fall below the graylist threshold and hello would stop
 * spreading. P1 (time in mesh) and P2 (first deliveries) stay small positives.
 *
 * Also off for loopback peers: P6, IP colocation. gossipsub penalises (n − 10)² × 5 once more
 * than 10 peers share an IP, a defence against Sybils behind one address; every daemon on one
 * machine shares 127.0.0.1, so with 15 or more local peers each of them was graylisted and
 * hello no longer converged. Peers on loopback are on this very machine.
 */
export const TOPIC_SCORE: TopicScoreParams = createTopicScoreParams({
  topicWeight: 1,
  // P1: +0.01 per second in the mesh, at most +1 (after 100 s)
  timeInMeshWeight: 0.01,
  timeInMeshQuantum: 1_000,
  timeInMeshCap: 100,
  // P2: +0.1 per first delivery, at most +1
  firstMessageDeliveriesWeight: 0.1,
  firstMessageDeliveriesDecay: 0.9,
  firstMessageDeliveriesCap: 10,
  // P3, P3b: off (see above)
  meshMessageDeliveriesWeight: 0,
  meshFailurePenaltyWeight: 0,
  // P4
  invalidMessageDeliveriesWeight: GOSSIP_INVALID_MESSAGE_WEIGHT,
  invalidMessageDeliveriesDecay: GOSSIP_INVALID_MESSAGE_DECAY
})
validateTopicScoreParams(TOPIC_SCORE)

/** The peer-level parameters: the hello handshake as the application score, loopback exempt from P6. */
export function peerScoreParams (appSpecificScore: (peerId: string) => number): Partial<PeerScoreParams> {
  return { appSpecificScore, IPColocationFactorWhitelist: new Set(LOOPBACK_IPS) }
}

export const SCORE_THRESHOLDS: Partial<PeerScoreThresholds> = {
  gossipThreshold: GOSSIP_GOSSIP_THRESHOLD,
  publishThreshold: GOSSIP_PUBLISH_THRESHOLD,
  graylistThreshold: GOSSIP_GRAYLIST_THRESHOLD
}

/**
 * gossipsub takes topic score parameters only at construction, but dms learns its topics as
 * behaviours register. The live parameters are the ones its PeerScore reads on every
 * computation (`score.params.topics`), not on its public interface: found by shape, and when
 * absent (another implementation) the topic goes unscored, which only forgoes P4.
 */
interface ScoredPubsub { score: { params: { topics: Record<string, TopicScoreParams> } } }
function hasScoreParams (p: object): p is ScoredPubsub {
  const topics = (p as { score?: { params?: { topics?: unknown } } }).score?.params?.topics
  return typeof topics === 'object' && topics !== null
}

/** Scores `topic` with TOPIC_SCORE; false when this gossipsub offers no way to. */
export function scoreTopic (pubsub: object, topic: string): boolean {
  if (!hasScoreParams(pubsub)) return false
  pubsub.score.params.topics[topic] ??= TOPIC_SCORE
  return true
}
