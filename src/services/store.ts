import type { Db } from '../store/db.js'

/**
 * A JSON sublevel of the node's one db. Values are `unknown` on purpose: every service parses
 * what it reads with its zod schema, so a damaged record is caught where it is loaded.
 */
export function jsonSublevel (db: Db, name: string) {
  return db.sublevel<string, unknown>(name, { valueEncoding: 'json' })
}
export type JsonSublevel = ReturnType<typeof jsonSublevel>
