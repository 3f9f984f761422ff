/** Samples of the Prometheus text format: `name{labels} value` → value, keyed by `name{labels}` as written. */
export function samples (text: string): Map<string, number> {
  const m = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const i = line.lastIndexOf(' ')
    m.set(line.slice(0, i), Number(line.slice(i + 1)))
  }
  return m
}
