import { LogController, type FastifyServerOptions } from 'fastify'
import type { Config } from './config.js'

/**
 * JSON logs at the configured level, with credentials redacted wherever request headers get logged; a
 * developer at a terminal gets pino-pretty instead, never in production. Fastify's two lines per request
 * are written at LOG_LEVEL=debug or trace only: at the default level the hot path logs nothing.
 */
export function loggingOptions (config: Config, isTTY: boolean): Pick<FastifyServerOptions, 'logger' | 'logController'> {
  return {
    logger: {
      level: config.logLevel,
      redact: { paths: ['req.headers.authorization', 'req.headers.cookie'], censor: '[redacted]' },
      ...(isTTY && !config.production && { transport: { target: 'pino-pretty', options: { ignore: 'pid,hostname' } } }),
    },
    logController: new LogController({ disableRequestLogging: config.logLevel !== 'debug' && config.logLevel !== 'trace' }),
  }
}
