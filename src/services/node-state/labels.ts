import { InvalidArgument } from '../../lib/errors.js'

/**
 * Label rules, as Kubernetes has them (so placement constraints written for one read the same
 * here): key = [prefix/]name; name 1–63 characters, alphanumeric at both ends, `-_.` inside;
 * prefix a lowercase DNS subdomain of at most 253; value empty or like a name.
 */
const NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/
const MAX_PREFIX = 253
const MAX_VALUE = 63

/**
 * Most labels a node carries. Labels travel in hello broadcasts and bids; 64 covers any
 * placement scheme seen in NkCLUSTER or Bacalhau with room to spare and keeps those small.
 */
export const MAX_LABELS = 64

export function checkLabelKey (key: string): void {
  const slash = key.indexOf('/')
  const prefix = slash >= 0 ? key.slice(0, slash) : null
  const name = slash >= 0 ? key.slice(slash + 1) : key
  if (prefix !== null && (prefix.length === 0 || prefix.length > MAX_PREFIX || !DNS_SUBDOMAIN.test(prefix))) {
    throw new InvalidArgument(`label key '${key}': the prefix must be a lowercase DNS subdomain of at most ${MAX_PREFIX} characters`, { key })
  }
  if (!NAME.test(name)) {
    throw new InvalidArgument(`label key '${key}': the name must be 1–63 characters [A-Za-z0-9-_.], alphanumeric at both ends`, { key })
  }
}

export function checkLabelValue (key: string, value: string): void {
  if (value !== '' && (value.length > MAX_VALUE || !NAME.test(value))) {
    throw new InvalidArgument(`label '${key}': the value must be empty or 1–${MAX_VALUE} characters [A-Za-z0-9-_.], alphanumeric at both ends`, { key, value })
  }
}

/** `k=v` as the CLI takes it; the first `=` splits, so a value cannot hold one (nor may it). */
export function parseLabel (arg: string): [string, string] {
  const eq = arg.indexOf('=')
  if (eq < 0) throw new InvalidArgument(`not a label: '${arg}' (expected key=value)`, { label: arg })
  const key = arg.slice(0, eq)
  const value = arg.slice(eq + 1)
  checkLabelKey(key)
  checkLabelValue(key, value)
  return [key, value]
}
