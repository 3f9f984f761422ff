import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { promisify } from 'node:util'

/**
 * A LAN of test hosts on one machine: one network namespace per host, each with a veth into a
 * bridge that lives in a namespace of its own (the "switch"). Addresses 10.231.0.<i+1>/24, and a
 * multicast route, so that mDNS (224.0.0.251) crosses the bridge. Nothing leaves these
 * namespaces: they have no route anywhere else. Needs root and Debian's iproute2 (`ip`).
 *
 * Faults (test/faults/): a host can be partitioned silently (iptables DROP on its eth0, both
 * ways: packets vanish, nobody is told) or loudly (its eth0 down), and healed. Those need
 * Debian's iptables too.
 */
const run = promisify(execFile)

export interface LanHost { netns: string, ip: string }
export interface Lan { hosts: LanHost[], destroy: () => Promise<void> }

async function ip (...args: string[]): Promise<void> {
  await run('ip', args, { timeout: 10_000 })
}

/** Why this machine cannot make namespaces (undefined when it can). */
export async function lanUnavailable (): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'network namespaces need root'
  try {
    await run('ip', ['-V'], { timeout: 5_000 })
  } catch {
    return 'the `ip` command (Debian package iproute2) is not installed'
  }
  return undefined
}

/** Why this machine cannot inject network faults into namespaces (undefined when it can). */
export async function faultsUnavailable (): Promise<string | undefined> {
  const lan = await lanUnavailable()
  if (lan !== undefined) return lan
  try {
    await run('iptables', ['--version'], { timeout: 5_000 })
  } catch {
    return 'the `iptables` command (Debian package iptables) is not installed'
  }
  return undefined
}

/**
 * The rules of a silent partition: every packet in or out of the host's eth0 is dropped (the
 * loopback stays up, so that the host's own API and processes still talk). `-w`: iptables takes
 * a lock shared by every namespace; wait for it rather than fail when another test holds it.
 */
const DROP_RULES = [['INPUT', '-i'], ['OUTPUT', '-o']] as const
async function iptables (h: LanHost, op: '-A' | '-D', chain: string, dir: string): Promise<void> {
  await run('ip', ['netns', 'exec', h.netns, 'iptables', '-w', '10', op, chain, dir, 'eth0', '-j', 'DROP'], { timeout: 15_000 })
}

/** Silent partition of host `h`: its packets vanish both ways, no error to anyone (TCP just stalls). */
export async function partition (h: LanHost): Promise<void> {
  for (const [chain, dir] of DROP_RULES) await iptables(h, '-A', chain, dir)
}

/** Ends a silent partition of `h` (removes the rules `partition` added). */
export async function heal (h: LanHost): Promise<void> {
  for (const [chain, dir] of DROP_RULES) await iptables(h, '-D', chain, dir)
}

/** Loud fault: `h`'s eth0 goes down (its own sends fail at once: no route; its peer hears nothing). */
export async function linkDown (h: LanHost): Promise<void> {
  await ip('-n', h.netns, 'link', 'set', 'eth0', 'down')
}

/** Brings `h`'s eth0 back, with its address and multicast route (a link down drops the route). */
export async function linkUp (h: LanHost): Promise<void> {
  await ip('-n', h.netns, 'link', 'set', 'eth0', 'up')
  await ip('-n', h.netns, 'route', 'replace', '224.0.0.0/4', 'dev', 'eth0')
}

export async function createLan (count: number): Promise<Lan> {
  const tag = randomBytes(3).toString('hex')
  const sw = `dms-${tag}-sw`
  const hosts: LanHost[] = Array.from({ length: count }, (_, i) => ({ netns: `dms-${tag}-h${i}`, ip: `10.231.0.${i + 1}` }))
  const made: string[] = []
  const destroy = async (): Promise<void> => {
    // deleting a namespace deletes the veth ends inside it, and so both ends of each pair
    await Promise.all(made.map(async ns => { await ip('netns', 'del', ns).catch(() => {}) }))
  }
  try {
    await ip('netns', 'add', sw)
    made.push(sw)
    await ip('-n', sw, 'link', 'add', 'br0', 'type', 'bridge', 'mcast_snooping', '0')
    await ip('-n', sw, 'link', 'set', 'br0', 'up')
    for (const [i, h] of hosts.entries()) {
      await ip('netns', 'add', h.netns)
      made.push(h.netns)
      // interface names are at most 15 characters; they are renamed once inside the namespaces
      const inner = `d${tag}h${i}`
      const outer = `d${tag}s${i}`
      await ip('link', 'add', inner, 'type', 'veth', 'peer', 'name', outer)
      await ip('link', 'set', inner, 'netns', h.netns)
      await ip('link', 'set', outer, 'netns', sw)
      await ip('-n', sw, 'link', 'set', outer, 'master', 'br0', 'up')
      await ip('-n', h.netns, 'link', 'set', 'lo', 'up')
      await ip('-n', h.netns, 'link', 'set', inner, 'name', 'eth0')
      await ip('-n', h.netns, 'addr', 'add', `${h.ip}/24`, 'dev', 'eth0')
      await ip('-n', h.netns, 'link', 'set', 'eth0', 'up')
      await ip('-n', h.netns, 'route', 'add', '224.0.0.0/4', 'dev', 'eth0')
    }
  } catch (err) {
    await destroy()
    throw err
  }
  return { hosts, destroy }
}
