import { createInterface } from 'node:readline'
import { NoPassphrase } from '../lib/errors.js'

/**
 * The keystore passphrase: `DMS_PASSPHRASE`, or a prompt when stdin is a TTY (echo muted).
 * With neither, a clear error rather than a hang.
 */
export async function getPassphrase (purpose: string, opts: { confirm?: boolean } = {}): Promise<string> {
  const env = process.env.DMS_PASSPHRASE
  if (env !== undefined && env !== '') return env
  if (process.stdin.isTTY !== true) {
    throw new NoPassphrase(`a passphrase is needed to ${purpose}: set DMS_PASSPHRASE or run on a terminal`)
  }
  const first = await prompt(`Passphrase to ${purpose}: `)
  if (opts.confirm === true) {
    const again = await prompt('Repeat the passphrase: ')
    if (again !== first) throw new NoPassphrase('the two passphrases differ')
  }
  if (first === '') throw new NoPassphrase('an empty passphrase is not accepted')
  return first
}

async function prompt (question: string): Promise<string> {
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: true })
  const out = rl as unknown as { _writeToOutput: (s: string) => void, output: NodeJS.WriteStream }
  let asked = false
  out._writeToOutput = (s: string) => {
    if (!asked) { process.stderr.write(s); asked = true }
  }
  // Ctrl-C at the prompt: the shell's convention (128 + SIGINT), on a line of its own; Ctrl-D
  // (end of input) is no passphrase rather than a hang
  rl.on('SIGINT', () => {
    process.stderr.write('\n')
    process.exit(130)
  })
  try {
    return await new Promise<string>((resolve, reject) => {
      rl.on('close', () => { reject(new NoPassphrase('no passphrase given (input closed)')) })
      rl.question(question, resolve)
    })
  } finally {
    process.stderr.write('\n')
    rl.close()
  }
}
