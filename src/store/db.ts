import { Level } from 'level'

/**
 * The node's one level database (`<data-dir>/db`). Each service takes a sublevel of its own;
 * writes that must be atomic across sublevels go through one `db.batch([...])` with
 * `{ type, sublevel, key, value }` operations. level 10's `get()` returns undefined for a
 * missing key.
 */
export type Db = Level<string, unknown>
export type Sublevel<V> = ReturnType<Db['sublevel']> & { get: (k: string) => Promise<V | undefined> }

export async function openDb (dir: string): Promise<Db> {
  const db = new Level<string, unknown>(dir, { valueEncoding: 'json' })
  await db.open()
  return db
}

export function sublevel<V> (db: Db, name: string): Level<string, V> {
  return db.sublevel<string, V>(name, { valueEncoding: 'json' }) as unknown as Level<string, V>
}
