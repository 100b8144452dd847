// The baseline of `npm run bench`: bare Fastify serving the same routes and bodies with no authentication,
// with the service's logging settings at LOG_LEVEL=warn, so that the ratio measures what authentication costs.
import Fastify, { LogController } from 'fastify'

const schema = { response: { 200: { type: 'object', properties: { message: { type: 'string' } } } } }
const app = Fastify({ logger: { level: 'warn' }, logController: new LogController({ disableRequestLogging: true }) })
app.get('/api/public', { schema }, async () => ({ message: 'Hello from a public endpoint! You don\'t need to be authenticated to see this.' }))
app.get('/api/private', { schema }, async () => ({ message: 'Hello from a private endpoint! You need to be authenticated to see this.' }))
app.get('/api/private-scoped', { schema }, async () => ({ message: 'Hello from a private endpoint! You need to be authenticated and have a scope of read:messages to see this.' }))
app.get('/ready', async () => ({ status: 'ready' }))
await app.listen({ port: Number(process.env.PORT), host: '127.0.0.1' })
