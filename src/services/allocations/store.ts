import type { Db } from '../../store/db.js'
import { jsonSublevel, type JsonSublevel } from '../store.js'
import { ALLOCATIONS_SUBLEVEL } from './constants.js'
import { AllocationRecordSchema, type AllocationRecord } from './spec.js'

/**
 * Allocation records in the node's db (sublevel `allocations`, key = allocation id), each
 * checked against its schema when loaded. A record that does not parse is reported, never
 * guessed at (see `AllocationRuntime.start`'s report) and never overwritten.
 */
export interface DamagedRecord { key: string, error: string }

export class AllocationStore {
  private readonly db: Db
  private readonly sub: JsonSublevel
  private readonly sync: boolean

  constructor (db: Db, opts: { syncWrites?: boolean } = {}) {
    this.db = db
    this.sub = jsonSublevel(db, ALLOCATIONS_SUBLEVEL)
    this.sync = opts.syncWrites ?? true
  }

  async loadAll (): Promise<{ records: AllocationRecord[], damaged: DamagedRecord[] }> {
    const records: AllocationRecord[] = []
    const damaged: DamagedRecord[] = []
    for await (const [key, value] of this.sub.iterator()) {
      const r = AllocationRecordSchema.safeParse(value)
      if (r.success && r.data.id === key) records.push(r.data)
      else damaged.push({ key, error: r.success ? `its id is ${r.data.id}` : r.error.issues.map(i => `${i.path.join('.')}: ${i.message}`).join('; ') })
    }
    return { records, damaged }
  }

  /** One record, written whole; resolves once level has it (fsync'd unless syncWrites is off). */
  async put (record: AllocationRecord): Promise<void> {
    await this.db.batch([{ type: 'put', sublevel: this.sub, key: record.id, value: record }], { sync: this.sync })
  }

  async del (id: string): Promise<void> {
    await this.db.batch([{ type: 'del', sublevel: this.sub, key: id }], { sync: this.sync })
  }
}
