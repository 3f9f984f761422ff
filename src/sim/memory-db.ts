import { AbstractIterator, AbstractLevel } from 'abstract-level'
import type { Db } from '../store/db.js'

interface RangeOptions { gt?: string, gte?: string, lt?: string, lte?: string, reverse?: boolean, limit?: number, keys?: boolean, values?: boolean }

function inRange (k: string, o: RangeOptions): boolean {
  if (o.gt !== undefined && !(k > o.gt)) return false
  if (o.gte !== undefined && !(k >= o.gte)) return false
  if (o.lt !== undefined && !(k < o.lt)) return false
  if (o.lte !== undefined && !(k <= o.lte)) return false
  return true
}

class MemoryIterator extends AbstractIterator<MemoryLevel, string, string> {
  private i = 0
  private readonly entries: Array<[string, string]>

  constructor (db: MemoryLevel, map: Map<string, string>, options: RangeOptions) {
    super(db, options as never)
    const keys = [...map.keys()].filter(k => inRange(k, options)).sort()
    if (options.reverse === true) keys.reverse()
    const limit = options.limit === undefined || options.limit < 0 ? Infinity : options.limit
    this.entries = keys.slice(0, limit).map(k => [k, map.get(k) as string])
  }

  async _next (): Promise<[string, string] | undefined> {
    return this.entries[this.i++]
  }
}

/**
 * A level database in memory (the simulator's peer books): the real PeerBook runs on it unchanged.
 * Every operation settles as a promise continuation (no I/O, no thread pool), so a simulated run
 * stays deterministic; a real on-disk level would finish its writes at real-time moments.
 */
export class MemoryLevel extends AbstractLevel<string, string, string> {
  private readonly map = new Map<string, string>()

  constructor () {
    super({ encodings: { utf8: true }, permanence: false } as never, { keyEncoding: 'utf8', valueEncoding: 'utf8' } as never)
  }

  async _get (key: string): Promise<string | undefined> { return this.map.get(key) }
  async _put (key: string, value: string): Promise<void> { this.map.set(key, value) }
  async _del (key: string): Promise<void> { this.map.delete(key) }
  async _batch (ops: Array<{ type: 'put' | 'del', key: string, value?: string }>): Promise<void> {
    for (const op of ops) {
      if (op.type === 'put') this.map.set(op.key, op.value as string)
      else this.map.delete(op.key)
    }
  }

  _iterator (options: RangeOptions): MemoryIterator { return new MemoryIterator(this, this.map, options) }

  /** Keys held (all sublevels together). */
  get entries (): number { return this.map.size }
}

/** An opened in-memory database typed as the node's `Db`, which the peer book takes. */
export async function openMemoryDb (): Promise<Db> {
  const db = new MemoryLevel()
  await db.open()
  return db as unknown as Db
}
