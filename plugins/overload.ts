import fp from 'fastify-plugin'
import { AuthError } from '../lib/errors.js'
import { EventLoopLoad } from '../lib/event-loop-load.js'

const SAMPLE_INTERVAL_MS = 100

declare module 'fastify' {
  interface FastifyContextConfig {
    /** A probe (/health, /ready) is never shed: liveness must not fail for load, readiness follows keys only. */
    probe?: boolean
  }
}

/**
 * Load shedding: past the configured event-loop delay or utilisation, a request gets `503 overloaded` with
 * Retry-After at once, in the contract's shape, instead of queueing until its client times out. Sampled
 * every 100 ms; both measures over that interval, not since startup. A request pays one flag check: the
 * route's config is read only while shedding (@fastify/under-pressure's hook read it on every request).
 */
export default fp(async function overload (app) {
  const { maxEventLoopDelayMs, maxEventLoopUtilization, retryAfterSec } = app.config.overload
  if (maxEventLoopDelayMs === 0 && maxEventLoopUtilization === 0) {
    return
  }
  const refusal = new AuthError('overloaded', 'The service is overloaded: retry shortly', { retryAfterSec })
  const load = new EventLoopLoad()
  let overloaded = false
  let sampler: NodeJS.Timeout | undefined
  const sample = (): void => {
    load.sample()
    overloaded = (maxEventLoopDelayMs > 0 && load.delayMs > maxEventLoopDelayMs) ||
      (maxEventLoopUtilization > 0 && load.utilization > maxEventLoopUtilization)
  }
  // The first 300 ms measure startup (loading, compiling), not load: nothing is shed until they have passed.
  app.addHook('onReady', async () => {
    sampler = setTimeout(() => {
      load.sample()
      sampler = setInterval(sample, SAMPLE_INTERVAL_MS).unref()
    }, 3 * SAMPLE_INTERVAL_MS).unref()
  })
  app.addHook('onClose', async () => {
    clearTimeout(sampler)
    load.stop()
  })
  app.addHook('onRequest', (request, _reply, done) => {
    if (overloaded && request.routeOptions.config.probe !== true) {
      app.metrics.shed()
      request.authOutcome = refusal.code
      return done(refusal) // answered by the app's error handler, as every AuthError is
    }
    done()
  })
}, { name: 'overload', dependencies: ['config', 'metrics', 'auth'] })
