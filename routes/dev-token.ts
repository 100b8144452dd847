import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { FastifyInstance } from 'fastify'
import { Type } from 'typebox'

const MintRequest = Type.Object({
  scope: Type.Optional(Type.String({ maxLength: 2000 })),
  permissions: Type.Optional(Type.Array(Type.String({ maxLength: 200 }), { maxItems: 100 })),
  sub: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  expiresIn: Type.Optional(Type.Integer({ minimum: 1, maximum: 86_400 })),
}, { additionalProperties: false })

const TokenResponse = Type.Object({
  access_token: Type.String(),
  token_type: Type.Literal('Bearer'),
  expires_in: Type.Integer(),
})

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
