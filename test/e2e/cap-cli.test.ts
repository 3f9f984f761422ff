import { spawnSync } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Keystore } from '../../src/identity/keystore.js'
import type { TokenView } from '../../src/security/service.js'
import { issueToken, tokenId } from '../../src/security/ucan.js'
import { BIN, PASSPHRASE, cleanup, dms, dmsJson, startDaemon, tempDir, type CliResult, type Daemon } from './harness.js'

/**
 * Every `dms cap` command through the CLI (specs/capabilities.md §9): a daemon D whose `dms`
 * context is edited while it runs (each edit is in force at the next call, no restart), and a
 * data dir P with no daemon, where the same commands edit files.
 */

const LIST = '/dms/node/peers/list'

/** `cap grant` / `cap delegate` output: one JSON document, `{token, tokens: [{…view, token}]}`. */
function issued (r: CliResult): { views: TokenView[], tokens: string[] } {
  if (r.code !== 0) throw new Error(`exit ${r.code}: ${r.stderr}`)
  const out = JSON.parse(r.stdout) as { token: string, tokens: Array<TokenView & { token: string }> }
  expect(out.tokens.map(t => t.token).join(',')).toBe(out.token)
  return { views: out.tokens.map(({ token: _t, ...view }) => view), tokens: out.tokens.map(t => t.token) }
}

function refusedAs (r: CliResult, name: string): void {
  expect(r.stderr.split('\n')[0]).toMatch(new RegExp(`^${name}: `))
  expect(r.code).toBe(1)
}

const ids = (list: TokenView[]): string[] => list.map(t => t.id)

describe('dms cap (CLI)', () => {
  let d: Daemon
  let p: string
  let user: string, node: string
  /** Contexts of D's data dir created by `cap new`: DID by name. */
  const did: Record<string, string> = {}
  /** user → ops, /dms/node/peers, depth 2 (test 3 onwards). */
  let toOps: string

  beforeAll(async () => {
    [d, p] = await Promise.all([startDaemon(), tempDir()])
    await dmsJson(['init', '--data-dir', p])
    user = (await d.cli(['key', 'did'])).stdout.trim()
    node = d.info.did
  })
  afterAll(async () => { await cleanup([d], [p]) })

  const as = async (context: string, behavior = LIST): Promise<CliResult> => await d.cli(['actor', 'cmd', behavior, '--context', context])

  it('cap new creates a context (key and anchors); cap list shows its anchors', async () => {
    const names = ['ops', 'x', 'org', 'member']
    const created = await Promise.all(names.map(async n => await d.cliJson(['cap', 'new', n])))
    created.forEach((c, i) => {
      expect(c).toEqual({ context: names[i], did: expect.stringMatching(/^did:key:z6Mk/), created: ['key', 'anchors'] })
      did[names[i]] = c.did
    })
    const [again, forUser, bad, listed, dmsList] = await Promise.all([
      d.cli(['cap', 'new', 'ops']),
      d.cliJson(['cap', 'new', 'user']), // `dms init` made the key, not the anchors file
      d.cli(['cap', 'new', 'Not_OK!']),
      d.cliJson(['cap', 'list', '--context', 'ops']),
      d.cliJson(['cap', 'list', '--context', 'dms']) // through the running daemon (/dms/cap/list)
    ])
    refusedAs(again, 'Conflict')
    expect(forUser).toEqual({ context: 'user', did: user, created: ['anchors'] })
    refusedAs(bad, 'InvalidArgument')
    expect(listed).toEqual({ context: 'ops', did: did.ops, roots: [], require: [], provide: [], revoked: [] })
    expect(dmsList).toEqual({ context: 'dms', did: node, roots: [user], require: [], provide: [], revoked: [], revocations: 0 })
  })

  it('cap grant with --expiry and with --duration prints one JSON document with the token as a field', async () => {
    const before = Date.now()
    const [fixed, relative] = await Promise.all([
      d.cli(['cap', 'grant', did.ops, '--cap', '/dms/node/peers', '--expiry', '2030-01-31T12:00:00Z']),
      d.cli(['cap', 'grant', did.ops, '--cap', '/dms/node/peers', '--cap', '/broadcast', '--topic', '/nunet', '--audience', node, '--depth', '2', '--duration', '1h'])
    ])
    const a = issued(fixed)
    expect(a.views).toEqual([{
      id: tokenId(a.tokens[0]), issuer: user, subject: did.ops, capabilities: ['/dms/node/peers'], topics: [],
      expiry: '2030-01-31T12:00:00.000Z', expired: false, links: 1, revoked: false
    }])
    expect(a.tokens[0]).toMatch(/^eyJ[\w-]+\.[\w-]+\.[\w-]+$/)
    const b = issued(relative)
    expect(b.views[0]).toMatchObject({ capabilities: ['/dms/node/peers', '/broadcast'], topics: ['/nunet'], node, depth: 2, links: 1 })
    // --duration counts from when the command ran: between the calls' start and end (whole seconds)
    const after = Date.now()
    const expiry = Date.parse(b.views[0].expiry)
    expect(expiry).toBeGreaterThanOrEqual(Math.floor((before + 3_600_000) / 1000) * 1000)
    expect(expiry).toBeLessThanOrEqual(Math.ceil((after + 3_600_000) / 1000) * 1000)

    const bad = await Promise.all([
      ['--cap', LIST, '--expiry', '2030-01-31T12:00:00Z', '--duration', '1h'], // both
      ['--cap', LIST], // neither
      ['--cap', LIST, '--expiry', '2030-01-31T12:00:00'], // no zone
      ['--cap', LIST, '--expiry', '2001-01-01T00:00:00Z'], // past
      ['--cap', 'dms/node', '--duration', '1h'], // not a path
      ['--duration', '1h'], // nothing granted
      ['--cap', LIST, '--depth', 'two', '--duration', '1h']
    ].map(async args => await d.cli(['cap', 'grant', did.ops, ...args])))
    for (const r of bad) refusedAs(r, 'InvalidArgument')
    refusedAs(await d.cli(['cap', 'grant', 'did:example:ops', '--cap', LIST, '--duration', '1h']), 'InvalidArgument')
  })

  it('cap delegate chains on a held token and refuses more than held; --self-sign also|only', async () => {
    const delegate = async (...args: string[]): Promise<CliResult> => await d.cli(['cap', 'delegate', did.member, '--context', 'ops', ...args])
    refusedAs(await delegate('--cap', LIST, '--duration', '10m'), 'Unauthorized') // holds nothing yet

    toOps = issued(await d.cli(['cap', 'grant', did.ops, '--cap', '/dms/node/peers', '--depth', '2', '--duration', '1h'])).tokens[0]
    const held = await d.cliJson(['cap', 'anchor', '--context', 'ops', '--provide', toOps])
    expect(ids(held.provide)).toEqual([tokenId(toOps)])

    const [narrower, wider, longer, also, only, badMode] = await Promise.all([
      delegate('--cap', LIST, '--duration', '10m'),
      delegate('--cap', '/dms', '--duration', '10m'),
      delegate('--cap', LIST, '--duration', '2h'),
      delegate('--cap', LIST, '--duration', '10m', '--self-sign', 'also'),
      delegate('--cap', '/dms/cap', '--duration', '10m', '--self-sign', 'only'),
      delegate('--cap', LIST, '--duration', '10m', '--self-sign', 'maybe')
    ])
    const n = issued(narrower)
    expect(n.views).toEqual([expect.objectContaining({ issuer: did.ops, subject: did.member, capabilities: [LIST], depth: 1, links: 2 })])
    refusedAs(wider, 'Unauthorized')
    refusedAs(longer, 'Unauthorized')
    const a = issued(also)
    expect(a.tokens).toHaveLength(2)
    expect(a.views.map(v => [v.issuer, v.links])).toEqual([[did.ops, 2], [did.ops, 1]])
    const o = issued(only)
    expect(o.views).toEqual([expect.objectContaining({ issuer: did.ops, capabilities: ['/dms/cap'], links: 1 })])
    refusedAs(badMode, 'InvalidArgument')
  })

  it('cap anchor / cap remove on --context dms apply at once through the running daemon, for each kind', async () => {
    // root
    refusedAs(await as('x'), 'Unauthorized')
    expect((await d.cliJson(['cap', 'anchor', '--context', 'dms', '--root', did.x])).roots).toEqual([user, did.x])
    expect((await as('x')).code).toBe(0)
    expect((await d.cliJson(['cap', 'remove', '--context', 'dms', '--root', did.x])).roots).toEqual([user])
    refusedAs(await as('x'), 'Unauthorized')

    // revoke: ops holds user → ops (its provide anchor); the node's revoke anchor refuses it
    expect((await as('ops')).code).toBe(0)
    expect(ids((await d.cliJson(['cap', 'anchor', '--context', 'dms', '--revoke', toOps])).revoked)).toEqual([tokenId(toOps)])
    refusedAs(await as('ops'), 'Unauthorized')
    expect((await d.cliJson(['cap', 'remove', '--context', 'dms', '--revoke', tokenId(toOps)])).revoked).toEqual([])
    expect((await as('ops')).code).toBe(0)

    // require: the user admits organisation `org` for /dms/node/peers/list; org's member gets `/` from org
    const admit = issued(await d.cli(['cap', 'grant', did.org, '--cap', LIST, '--duration', '1h'])).tokens[0]
    const fromOrg = issued(await d.cli(['cap', 'grant', did.member, '--context', 'org', '--cap', '/', '--duration', '1h'])).tokens[0]
    await d.cliJson(['cap', 'anchor', '--context', 'member', '--provide', fromOrg])
    refusedAs(await as('member'), 'Unauthorized')
    expect(ids((await d.cliJson(['cap', 'anchor', '--context', 'dms', '--require', admit])).require)).toEqual([tokenId(admit)])
    const [listOk, selfNo] = await Promise.all([as('member'), as('member', '/dms/node/peers/self')])
    expect(listOk.code).toBe(0)
    refusedAs(selfNo, 'Unauthorized')
    expect((await d.cliJson(['cap', 'remove', '--context', 'dms', '--require', admit])).require).toEqual([])
    refusedAs(await as('member'), 'Unauthorized')

    // provide: only a token issued to the node itself
    const toNode = issued(await d.cli(['cap', 'grant', node, '--cap', '/dms/node/peers', '--duration', '1h'])).tokens[0]
    const [notMine, mine] = await Promise.all([
      d.cli(['cap', 'anchor', '--context', 'dms', '--provide', toOps]),
      d.cliJson(['cap', 'anchor', '--context', 'dms', '--provide', toNode])
    ])
    refusedAs(notMine, 'InvalidArgument')
    expect(ids(mine.provide)).toEqual([tokenId(toNode)])
    expect((await d.cliJson(['cap', 'remove', '--context', 'dms', '--provide', tokenId(toNode)])).provide).toEqual([])

    // refusals: nothing to remove, no kind or two kinds, an expired token, not a DID
    const expired = await issueToken(await new Keystore(d.dataDir).load('user', PASSPHRASE), { audience: node, caps: [LIST], exp: Math.floor(Date.now() / 1000) - 60 })
    const [absent, none, two, old, notDid] = await Promise.all([
      d.cli(['cap', 'remove', '--context', 'dms', '--root', did.x]),
      d.cli(['cap', 'anchor', '--context', 'dms']),
      d.cli(['cap', 'anchor', '--context', 'dms', '--root', did.x, '--revoke', toOps]),
      d.cli(['cap', 'anchor', '--context', 'dms', '--provide', expired]),
      d.cli(['cap', 'anchor', '--context', 'dms', '--root', 'not-a-did'])
    ])
    refusedAs(absent, 'NotFound')
    refusedAs(none, 'InvalidArgument')
    refusedAs(two, 'InvalidArgument')
    refusedAs(old, 'InvalidToken')
    refusedAs(notDid, 'InvalidArgument')
    // the daemon is still in the state the successful edits left
    expect(await d.cliJson(['cap', 'list', '--context', 'dms'])).toMatchObject({ roots: [user], require: [], provide: [], revoked: [] })
  })

  it('cap anchor / cap remove on a context no daemon serves edit its file', async () => {
    const added = await d.cliJson(['cap', 'anchor', '--context', 'ops', '--root', did.x])
    expect(added.roots).toEqual([did.x])
    const file = JSON.parse(await readFile(join(d.dataDir, 'caps', 'ops.json'), 'utf8'))
    expect(file).toMatchObject({ version: 1, context: 'ops', roots: [did.x] })
    expect((await d.cliJson(['cap', 'remove', '--context', 'ops', '--provide', tokenId(toOps)])).provide).toEqual([])
    expect((await d.cliJson(['cap', 'remove', '--context', 'ops', '--root', did.x])).roots).toEqual([])
  })

  it('cap revoke: only the issuer may; through the daemon it is recorded and spread, without one it is local', async () => {
    refusedAs(await d.cli(['cap', 'revoke', toOps, '--context', 'ops']), 'Unauthorized') // ops holds it, did not issue it
    await d.cliJson(['cap', 'anchor', '--context', 'ops', '--provide', toOps])
    expect((await as('ops')).code).toBe(0)
    const first = await d.cliJson(['cap', 'revoke', toOps])
    // `spread` says the record was handed to gossipsub: a lone daemon says true (specs/capabilities.md §7).
    expect(first).toEqual({ id: tokenId(toOps), fresh: true, spread: true })
    const [again, listed, refused] = await Promise.all([
      d.cliJson(['cap', 'revoke', toOps]),
      d.cliJson(['cap', 'list', '--context', 'dms']),
      as('ops')
    ])
    expect(again).toMatchObject({ id: tokenId(toOps), fresh: false })
    expect(listed).toMatchObject({ revoked: [expect.objectContaining({ id: tokenId(toOps) })], revocations: 1 })
    refusedAs(refused, 'Unauthorized')

    // An issuer that is no root of the node (ops) still revokes its own token through the daemon;
    // the token's subject (x) may not, and the CLI shows the refusal's reason.
    const byOps = issued(await d.cli(['cap', 'grant', did.x, '--cap', LIST, '--duration', '1h', '--context', 'ops'])).tokens[0]
    const notIssuer = await d.cli(['cap', 'revoke', byOps, '--context', 'x'])
    refusedAs(notIssuer, 'Unauthorized')
    expect(notIssuer.stderr).toContain('(reason: not-issuer)')
    expect(await d.cliJson(['cap', 'revoke', byOps, '--context', 'ops'])).toEqual({ id: tokenId(byOps), fresh: true, spread: true })

    // P runs no daemon: the token joins P's own revoke anchors, with a warning that it did not spread.
    const pUser = (await dms(['key', 'did', '--data-dir', p])).stdout.trim()
    const t = issued(await dms(['cap', 'grant', pUser, '--cap', LIST, '--duration', '1h', '--data-dir', p])).tokens[0]
    const local = await dms(['cap', 'revoke', t, '--data-dir', p])
    expect(local.code).toBe(0)
    expect(local.stderr).toMatch(/^warning: no daemon is running/)
    expect(JSON.parse(local.stdout)).toEqual({ id: tokenId(t), fresh: true, spread: false })
    expect(ids((await dmsJson(['cap', 'list', '--context', 'dms', '--data-dir', p])).revoked)).toEqual([tokenId(t)])
  })

  it('cap grant --token-only prints the token alone; --audience takes a PeerId or a node DID, and refuses a user DID saying what it is', async () => {
    const [only, byPeerId, byDid, userAsNode, userAsDest, nope] = await Promise.all([
      d.cli(['cap', 'grant', did.ops, '--cap', LIST, '--duration', '1h', '--token-only']),
      d.cli(['cap', 'grant', did.ops, '--cap', LIST, '--duration', '1h', '--audience', d.info.peerId]),
      d.cli(['cap', 'grant', did.ops, '--cap', LIST, '--duration', '1h', '--audience', node]),
      d.cli(['cap', 'grant', did.ops, '--cap', LIST, '--duration', '1h', '--audience', user]),
      d.cli(['actor', 'cmd', '/public/hello', '--dest', user]),
      d.cli(['cap', 'list', '--context', 'nope'])
    ])
    expect(only.code).toBe(0)
    expect(only.stdout).toMatch(/^eyJ[\w-]+\.[\w-]+\.[\w-]+\n$/)
    expect(issued(byPeerId).views[0].node).toBe(node)
    expect(issued(byDid).views[0].node).toBe(node)
    refusedAs(userAsNode, 'InvalidArgument')
    expect(userAsNode.stderr).toMatch(/--audience did:key:\S+ is the DID of your 'user' key; a user DID names a person/)
    refusedAs(userAsDest, 'InvalidArgument')
    expect(userAsDest.stderr).toMatch(/a user DID names a person/)
    refusedAs(nope, 'NotFound')
    expect(nope.stderr).toMatch(/no context 'nope'/)
  })

  it('cap list marks a revoked token: by the node\'s revoke anchor, and by a revocation record the daemon holds', async () => {
    const held = issued(await d.cli(['cap', 'grant', did.ops, '--cap', LIST, '--duration', '1h'])).tokens[0]
    await d.cliJson(['cap', 'anchor', '--context', 'ops', '--provide', held])
    const fresh = (await d.cliJson(['cap', 'list', '--context', 'ops'])).provide.find((t: TokenView) => t.id === tokenId(held))
    expect(fresh.revoked).toBe(false)
    await d.cliJson(['cap', 'anchor', '--context', 'dms', '--revoke', held])
    const marked = (await d.cliJson(['cap', 'list', '--context', 'ops'])).provide.find((t: TokenView) => t.id === tokenId(held))
    expect(marked.revoked).toBe(true)

    const toNode = issued(await d.cli(['cap', 'grant', node, '--cap', '/dms/node/peers', '--duration', '1h'])).tokens[0]
    await d.cliJson(['cap', 'anchor', '--context', 'dms', '--provide', toNode])
    expect((await d.cliJson(['cap', 'list', '--context', 'dms'])).provide).toEqual([expect.objectContaining({ id: tokenId(toNode), revoked: false })])
    await d.cliJson(['cap', 'revoke', toNode])
    expect((await d.cliJson(['cap', 'list', '--context', 'dms'])).provide).toEqual([expect.objectContaining({ id: tokenId(toNode), revoked: true })])
  })

  it('no command crashes on a closed pipe (| head)', async () => {
    // `| true`: the reader is gone before dms writes, so every write meets a closed pipe (EPIPE)
    const run = (args: string): string => `"${process.execPath}" "${BIN}" ${args} | true; echo "rc=\${PIPESTATUS[0]}"`
    const r = spawnSync('bash', ['-c', [run(`cap grant ${user} --cap ${LIST} --duration 1h --data-dir "${d.dataDir}"`), run('actor cmd --help'), run(`peers list --data-dir "${d.dataDir}"`)].join('; ')],
      { env: { ...process.env, DMS_PASSPHRASE: PASSPHRASE }, encoding: 'utf8', timeout: 60_000 })
    expect(r.stderr).toBe('')
    expect(r.stdout).toBe('rc=0\nrc=0\nrc=0\n')
  })
})

