import type { FastifyInstance } from 'fastify'
import { Type } from 'typebox'
import { AuthError } from '../lib/errors.js'

const IssuerStatus = Type.Object({
  issuer: Type.String(),
  state: Type.Union(['loading', 'ready', 'stale', 'unavailable', 'unusable'].map((state) => Type.Literal(state))),
  keys: Type.Integer(),
  reason: Type.Optional(Type.String()),
})
const Ready = Type.Object({ status: Type.Literal('ready'), issuers: Type.Array(IssuerStatus) })
const NotReady = Type.Object({
  statusCode: Type.Literal(503),
  error: Type.String(),
  code: Type.String(),
  message: Type.String(),
  issuers: Type.Array(IssuerStatus),
})

const NOT_READY = new AuthError('jwks_unavailable', 'The signing keys of every trusted issuer are not loaded yet')
const CLOSING = new AuthError('jwks_unavailable', 'The service is shutting down')

/** Liveness and readiness probes for orchestrators. */
export default async function health (app: FastifyInstance) {
  app.get('/health', { schema: { response: { 200: Type.Object({ status: Type.String() }) } }, config: { probe: true } }, () => ({ status: 'ok' }))

  // Ready once every trusted issuer's signing keys are loaded, and until shutdown begins; never for load
  // (shedding answers that), or every replica would turn unready at once. The body says how each issuer
  // stands, and why one is not usable.
  let closing = false
  app.addHook('preClose', async () => { closing = true })
  app.get('/ready', { schema: { response: { 200: Ready, 503: NotReady } }, config: { probe: true } }, (_request, reply) => {
    const { issuers } = app
    const refusal = closing ? CLOSING : issuers.ready ? undefined : NOT_READY
    if (refusal !== undefined) {
      return reply.code(503).headers(refusal.headers).send({ ...refusal.toJSON(), issuers: issuers.status })
    }
    return { status: 'ready' as const, issuers: issuers.status }
  })
}
