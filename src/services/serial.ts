/**
 * A one-lane queue: each task starts after the previous one settled. Services run every
 * read-modify-write of their persisted state through one, so two concurrent calls can never
 * both read the same state and both write a result derived from it.
 */
export type Serial = <T>(task: () => Promise<T>) => Promise<T>

export function createSerial (): Serial {
  let tail: Promise<unknown> = Promise.resolve()
  return async <T>(task: () => Promise<T>): Promise<T> => {
    const run = tail.then(task, task)
    // The queue continues whatever this task's outcome; the caller still sees its rejection.
    tail = run.catch(() => undefined)
    return await run
  }
}
