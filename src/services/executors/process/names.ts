import { BadRequest } from '../../../lib/errors.js'

/**
 * File and cgroup names from allocation ids: only `[A-Za-z0-9_-]` pass as they are, every other
 * byte becomes `%HH`, so `.` can separate an id from the incarnation's token and any id maps to
 * one name and back.
 */
export function encodeName (id: string): string {
  return encodeURIComponent(id).replace(/[!'()*.~]/g, c => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
}

export function decodeName (name: string): string | undefined {
  try { return decodeURIComponent(name) } catch { return undefined }
}

/** Names stay well below the 255 bytes a file or cgroup name may have, token and suffix added. */
const MAX_ENCODED = 200

export function checkedName (allocationId: string): string {
  const name = encodeName(allocationId)
  if (allocationId.length === 0 || name.length > MAX_ENCODED) {
    throw new BadRequest(`allocationId must be 1 to ${MAX_ENCODED} bytes once encoded for a file name`, { field: 'allocationId', length: name.length, max: MAX_ENCODED })
  }
  return name
}
