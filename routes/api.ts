import type { FastifyInstance } from 'fastify'
import { Type } from 'typebox'

const Message = Type.Object({ message: Type.String() })
const schema = { response: { 200: Message } }

const PUBLIC = { message: 'Hello from a public endpoint! You don\'t need to be authenticated to see this.' }
const PRIVATE = { message: 'Hello from a private endpoint! You need to be authenticated to see this.' }
const SCOPED = { message: 'Hello from a private endpoint! You need to be authenticated and have a scope of read:messages to see this.' }

/**
 * The quickstart's three endpoints; each states what it needs in `config.auth`, nothing more. The handlers
 * are plain functions: Fastify sends what they return at once, with no promise per request.
 */
export default async function api (app: FastifyInstance) {
  app.get('/api/public', { schema }, () => PUBLIC)
  app.get('/api/private', { schema, config: { auth: true } }, () => PRIVATE)
  app.get('/api/private-scoped', { schema, config: { auth: { scopes: ['read:messages'] } } }, () => SCOPED)
}
