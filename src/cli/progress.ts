/**
 * Progress of a long operation (a deployment, a daemon starting, a wait) on stderr: on a terminal
 * a spinner beside the current step, each finished step left as a line; otherwise (a pipe, a log,
 * CI) one plain line per step, nothing redrawn. stdout is never touched: it carries the result.
 */
export interface Progress {
  /** A new current step; the previous one is done. */
  step: (text: string) => void
  /** Ends the progress: the last step is left as a line, with `text` instead when given. */
  done: (text?: string) => void
}

const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏']
/** Redraw period of the spinner: smooth to the eye, negligible CPU. */
const FRAME_MS = 80

export function progress (stream: NodeJS.WriteStream = process.stderr, opts: { terminalOnly?: boolean } = {}): Progress {
  if (stream.isTTY !== true) {
    // a short wait whose outcome is the command's only news (`run --detach`, `wait`) says nothing
    // off a terminal: a script reads its error as the first line of stderr
    if (opts.terminalOnly === true) return { step: () => {}, done: () => {} }
    return { step: (text) => { stream.write(`${text}\n`) }, done: (text) => { if (text !== undefined) stream.write(`${text}\n`) } }
  }
  let current: string | undefined
  let frame = 0
  const draw = (): void => { if (current !== undefined) stream.write(`\r\x1b[2K${FRAMES[frame++ % FRAMES.length]} ${current}`) }
  const timer = setInterval(draw, FRAME_MS)
  timer.unref()
  const settle = (text = current): void => {
    if (text !== undefined) stream.write(`\r\x1b[2K${text}\n`)
    current = undefined
  }
  return {
    step: (text) => { settle(); current = text; draw() },
    done: (text) => { clearInterval(timer); settle(text ?? current) }
  }
}
