/** Port allocator (issue 4). Interface to be completed there. */
export interface PortAllocator {
  list: () => Promise<unknown>
}
