import type { FastifyInstance } from 'fastify'
import { Type } from 'typebox'
import { AuthError } from '../lib/errors.js'

const Status = Type.Object({ status: Type.String() })

/** Liveness and readiness probes for orchestrators. */
export default async function health (app: FastifyInstance) {
  app.get('/health', { schema: { response: { 200: Status } } }, async () => ({ status: 'ok' }))

  // Ready once the issuer's signing keys are loaded; until then a replica should get no traffic.
  app.get('/ready', { schema: { response: { 200: Status } } }, async () => {
    if (!app.keySource.ready) {
      app.keySource.warmUp() // a safety net: the key source retries on its own
      throw new AuthError('jwks_unavailable', 'The token issuer\'s signing keys are not loaded yet')
    }
    return { status: 'ready' }
  })
}
