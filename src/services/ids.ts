import { InvalidArgument } from '../lib/errors.js'

/** Ids are level keys and appear in logs and replies: keep them short and printable. */
export const MAX_ID_LENGTH = 128
const ID_PATTERN = /^[\x21-\x7e]+$/

/** Refuses (InvalidArgument) a reservation/allocation id that is empty, long or unprintable. */
export function checkId (id: string, what = 'id'): void {
  if (typeof id !== 'string' || id.length === 0 || id.length > MAX_ID_LENGTH || !ID_PATTERN.test(id)) {
    throw new InvalidArgument(`${what} must be 1–${MAX_ID_LENGTH} printable ASCII characters without spaces`, { id: String(id).slice(0, MAX_ID_LENGTH) })
  }
}
