import type { FastifyInstance } from 'fastify'
import { Type } from 'typebox'

const Message = Type.Object({ message: Type.String() })
const schema = { response: { 200: Message } }

/** The quickstart's three endpoints; each states what it needs in `config.auth`, nothing more. */
export default async function api (app: FastifyInstance) {
  app.get('/api/public', { schema }, async () => ({
    message: 'Hello from a public endpoint! You don\'t need to be authenticated to see this.',
  }))

  app.get('/api/private', { schema, config: { auth: true } }, async () => ({
    message: 'Hello from a private endpoint! You need to be authenticated to see this.',
  }))

  app.get('/api/private-scoped', { schema, config: { auth: { scopes: ['read:messages'] } } }, async () => ({
    message: 'Hello from a private endpoint! You need to be authenticated and have a scope of read:messages to see this.',
  }))
}
