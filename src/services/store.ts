import type { Db } from '../store/db.js'

/**
 * A JSON sublevel of the node's one db. Values are `unknown` on purpose: every service parses
 * what it reads with its zod schema, so a damaged record is caught where it is loaded.
 */
export function jsonSublevel (db: Db, name: string) {
  return db.sublevel<string, unknown>(name, { valueEncoding: 'json' })
}
export type JsonSublevel = ReturnType<typeof jsonSublevel>

/**
 * A deletion in a JSON sublevel, to be written in another service's level batch: two services
 * that must change together (an allocation's ports and its resources) write in one batch, so a
 * `kill -9` leaves both changed or neither.
 */
export interface JsonDel { type: 'del', sublevel: JsonSublevel, key: string }

/**
 * Every record of a JSON sublevel that parses with `schema`, in key order. A record that does not
 * parse is logged at error (`<what> record does not parse; left as it is`) and skipped, never
 * deleted: a later version, or a person, may still read it.
 */
export async function * parsedRecords<T> (
  sub: JsonSublevel,
  schema: { safeParse: (v: unknown) => { success: true, data: T } | { success: false, error: { message: string } } },
  log: { error: (o: object, msg: string) => void },
  what: string
): AsyncGenerator<T> {
  for await (const [key, value] of sub.iterator()) {
    const r = schema.safeParse(value)
    if (r.success) yield r.data
    else log.error({ key, error: r.error.message }, `${what} record does not parse; left as it is`)
  }
}
