import type { FastifyServerOptions } from 'fastify'
import type { Config } from './config.js'

/**
 * JSON logs at the configured level, with credentials redacted wherever a request's headers get logged.
 * A developer at a terminal gets pino-pretty instead; never in production.
 */
export function loggerOptions (config: Config, isTTY: boolean): FastifyServerOptions['logger'] {
  return {
    level: config.logLevel,
    redact: { paths: ['req.headers.authorization', 'req.headers.cookie'], censor: '[redacted]' },
    ...(isTTY && !config.production && { transport: { target: 'pino-pretty', options: { ignore: 'pid,hostname' } } }),
  }
}
