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
