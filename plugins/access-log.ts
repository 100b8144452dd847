import type { FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'

/**
 * ACCESS_LOG=true: one JSON line per request, whatever LOG_LEVEL says (route pattern, method, status,
 * duration, the auth outcome, the subject when authenticated, and the request id), never a token or a raw
 * URL. Off by default: it costs a hook on every request.
 */
export default fp(async function accessLog (app) {
  if (!app.config.accessLog) {
    return
  }
  const log = app.log.child({}, { level: 'info' })
  app.addHook('onResponse', (request, reply, done) => {
    log.info(accessRecord(request, reply), 'access')
    done()
  })
}, { name: 'access-log', dependencies: ['config', 'auth'] })

/** A request's access-log line: `outcome` is the refusal's code, or allowed / anonymous on a protected route. */
export function accessRecord (request: FastifyRequest, reply: FastifyReply): Record<string, unknown> {
  const protectedRoute = request.routeOptions.config.auth !== undefined
  return {
    reqId: request.id,
    method: request.method,
    route: request.routeOptions.url ?? 'unknown',
    status: reply.statusCode,
    durationMs: Math.round(reply.elapsedTime * 1000) / 1000,
    outcome: request.authOutcome ?? (protectedRoute ? (request.user === null ? 'anonymous' : 'allowed') : undefined),
    sub: request.user?.sub,
  }
}
