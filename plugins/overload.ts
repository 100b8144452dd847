import underPressure from '@fastify/under-pressure'
import type { FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { AuthError } from '../lib/errors.js'

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
  await app.register(underPressure, {
    maxEventLoopDelay: maxEventLoopDelayMs,
    maxEventLoopUtilization,
    eventLoopUtilizationMode: 'interval',
    sampleInterval: 100,
    // Answered here; returning nothing lets a probe go on, while a sent reply stops every other request.
    pressureHandler: (request: FastifyRequest, reply: FastifyReply) => {
      if (request.routeOptions.config.probe !== true) {
        reply.code(503).headers(shed.headers).send(shed.toJSON())
      }
    },
  })
}, { name: 'overload', dependencies: ['config'] })
