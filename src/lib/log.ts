import { pino, type Logger } from 'pino'

export type { Logger }

/**
 * Structured logs (pino): JSON lines, or pretty lines when stderr is a TTY. Level from
 * DMS_LOG_LEVEL (default info). Never log secrets: keys, passphrases, tokens' signatures.
 */
export function createLogger (name = 'dms', level = process.env.DMS_LOG_LEVEL ?? 'info'): Logger {
  const pretty = process.stderr.isTTY === true && process.env.DMS_LOG_FORMAT !== 'json'
  return pino({
    name,
    level,
    redact: { paths: ['passphrase', '*.passphrase', 'privateKey', '*.privateKey', 'token', '*.token', 'cap', '*.cap'], censor: '[redacted]' },
    transport: pretty ? { target: 'pino-pretty', options: { destination: 2, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } } : undefined
  }, pretty ? undefined : pino.destination(2))
}

/** A logger that discards everything (tests, library users who pass none). */
export function silentLogger (): Logger {
  return pino({ level: 'silent' })
}
