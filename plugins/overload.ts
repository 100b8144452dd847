import type { FastifyInstance, FastifyRequest, onRequestHookHandler } from 'fastify'
import fp from 'fastify-plugin'
import { asArray } from '../lib/as-array.js'
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
 * every 100 ms; both measures over that interval, not since startup. A request pays one flag check; which
 * routes are probes is settled when they are registered (@fastify/under-pressure's hook read the route's
 * config on every request).
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
  function shed (request: FastifyRequest): AuthError {
    app.metrics.shed()
    request.authOutcome = refusal.code
    return refusal // answered by the app's error handler, as every AuthError is
  }
  const shedFirst: onRequestHookHandler = (request, _reply, done) => {
    if (overloaded) {
      return done(shed(request))
    }
    done()
  }
  // The check rides on what each route runs anyway, so that a route costs no more than one flag check: first
  // among its onRequest hooks (before authentication, which is the work worth sparing), or, on a route that
  // has none (the public one), in its handler, since a first hook would put it through Fastify's hook
  // runner only for this. Probes are never shed, and are known when they are registered.
  app.addHook('onRoute', (route) => {
    if (route.config?.probe === true) {
      return
    }
    const hooks = asArray(route.onRequest)
    if (hooks.length > 0) {
      route.onRequest = [shedFirst, ...hooks]
      return
    }
    const { handler } = route
    route.handler = function shedOrHandle (this: FastifyInstance, request, reply) {
      if (overloaded) {
        throw shed(request)
      }
      return handler.call(this, request, reply)
    }
  })
}, { name: 'overload', dependencies: ['config', 'metrics', 'auth'] })
