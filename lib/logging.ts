import { LogController, type FastifyBaseLogger, type FastifyServerOptions } from 'fastify'
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

type Bindings = Parameters<FastifyBaseLogger['child']>[0]
type ChildOptions = Parameters<FastifyBaseLogger['child']>[1]
type MakeChild = FastifyBaseLogger['child']
type Method = (this: FastifyBaseLogger, ...args: unknown[]) => unknown
// Handed on to the real child: the log methods, and pino's own that a route may call on `request.log`.
const HANDED_ON = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'isLevelEnabled', 'bindings', 'setBindings', 'flush'] as const

/**
 * Makes the children `logger` gives without options of their own lazy: made when they first log. Fastify
 * makes one for every request, for its id; a pino child costs about 2,800 instructions, 4% of a public
 * request (callgrind), while at the levels production runs at nearly every request logs nothing. (Fastify's
 * `childLoggerFactory` option would do the same, but Fastify checks every logger such a factory returns, on
 * every request, and that check cost nearly all it saved.) A route with a log level or serializers of its
 * own gets its child at once: Fastify passes them as options.
 */
export function deferChildren (logger: FastifyBaseLogger): void {
  const makeChild = logger.child
  logger.child = function (this: FastifyBaseLogger, bindings: Bindings, options?: ChildOptions): FastifyBaseLogger {
    return options === undefined || isEmpty(options) ? new DeferredChild(this, bindings, makeChild) : makeChild.call(this, bindings, options)
  }
}

function isEmpty (options: object): boolean {
  for (const _option in options) {
    return false
  }
  return true
}

/** A logger's child, made when it is first used; until then, a reference to its parent and its bindings. */
class DeferredChild implements FastifyBaseLogger {
  readonly #parent: FastifyBaseLogger
  readonly #bindings: Bindings
  readonly #makeChild: MakeChild
  #child: FastifyBaseLogger | undefined = undefined

  constructor (parent: FastifyBaseLogger, bindings: Bindings, makeChild: MakeChild) {
    this.#parent = parent
    this.#bindings = bindings
    this.#makeChild = makeChild
  }

  #logger (): FastifyBaseLogger {
    return this.#child ??= this.#makeChild.call(this.#parent, this.#bindings)
  }

  get level (): string {
    return (this.#child ?? this.#parent).level
  }

  set level (level: string) {
    this.#logger().level = level
  }

  child (bindings: Bindings, options?: ChildOptions): FastifyBaseLogger {
    return this.#logger().child(bindings, options)
  }

  silent (): void {}

  declare fatal: FastifyBaseLogger['fatal']
  declare error: FastifyBaseLogger['error']
  declare warn: FastifyBaseLogger['warn']
  declare info: FastifyBaseLogger['info']
  declare debug: FastifyBaseLogger['debug']
  declare trace: FastifyBaseLogger['trace']

  static {
    for (const name of HANDED_ON) {
      const handOn = function (this: DeferredChild, ...args: unknown[]): unknown {
        const logger = this.#logger()
        return ((logger as unknown as Record<string, Method>)[name]!).apply(logger, args)
      }
      Object.defineProperty(this.prototype, name, { value: handOn, writable: true, configurable: true })
    }
  }
}
