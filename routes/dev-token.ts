import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { FastifyInstance } from 'fastify'
import { MintRequest, TokenResponse } from '../lib/dev-issuer.js'

/**
 * `POST /dev/token`: mints a token from the embedded dev issuer. Absent whenever an issuer is configured.
 * With a `DPoP` proof header (made for this request, as at a real token endpoint) or a `jkt` in the body,
 * the token is bound to that key (RFC 9449 §5) and answered with token_type DPoP.
 */
export default async function devToken (app: FastifyInstance) {
  const { devIssuer } = app
  if (devIssuer === null) {
    return
  }
  app.withTypeProvider<TypeBoxTypeProvider>().post('/dev/token', {
    schema: { body: MintRequest, response: { 200: TokenResponse } },
    // A bare `curl -X POST .../dev/token` mints a default token.
    preValidation: async (request) => {
      request.body ??= {}
    },
  }, (request) => {
    if (request.headers.dpop === undefined) {
      return devIssuer.mint(request.body)
    }
    if (request.body.jkt !== undefined) {
      throw Object.assign(new Error('Send a DPoP proof or a jkt, not both'), { statusCode: 400 })
    }
    return devIssuer.mint({ ...request.body, jkt: app.checkDpopProof(request) })
  })
}
