import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { FastifyInstance } from 'fastify'
import { MintRequest, TokenResponse } from '../lib/dev-issuer.js'

/** `POST /dev/token`: mints a token from the embedded dev issuer. Absent whenever an issuer is configured. */
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
  }, async (request) => devIssuer.mint(request.body))
}
