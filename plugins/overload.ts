import underPressure from '@fastify/under-pressure'
import type { FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { AuthError } from '../lib/errors.js'

const SAMPLE_INTERVAL_MS = 100

declare module 'fastify' {
  interface FastifyContextConfig {
    /** A probe (/health, /ready) is never shed: liveness must not fail for load, readiness follows keys only. */
    probe?: boolean
  }
}

/**
 * Load shedding (@fastify/under-pressure): past the configured event-loop delay or utilisation, a request
 * gets `503 overloaded` with Retry-After at once, in the contract's shape, instead of queueing until its
 * client times out. Sampled every 100 ms; utilisation over that interval, not since startup.
 */
export default fp(async function overload (app) {
  const { maxEventLoopDelayMs, maxEventLoopUtilization, retryAfterSec } = app.config.overload
  const shed = new AuthError('overloaded', 'The service is overloaded: retry shortly', { retryAfterSec })
  // The first samples measure startup (loading, compiling): nothing is shed until they have passed.
  let armed = false
  app.addHook('onReady', async () => {
    setTimeout(() => { armed = true }, 3 * SAMPLE_INTERVAL_MS).unref()
  })
  await app.register(underPressure, {
    maxEventLoopDelay: maxEventLoopDelayMs,
    maxEventLoopUtilization,
    eventLoopUtilizationMode: 'interval',
    sampleInterval: SAMPLE_INTERVAL_MS,
    // Answered here; returning nothing lets a probe go on, while a sent reply stops every other request.
    pressureHandler: (request: FastifyRequest, reply: FastifyReply) => {
      if (armed && request.routeOptions.config.probe !== true) {
        app.metrics.shed()
        request.authOutcome = shed.code
        reply.code(503).headers(shed.headers).send(shed.toJSON())
      }
    },
  })
}, { name: 'overload', dependencies: ['config', 'metrics', 'auth'] })
