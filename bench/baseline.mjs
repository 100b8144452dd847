// The baselines of `npm run bench`: bare Fastify serving the same routes and bodies as the service, with its
// logging settings at LOG_LEVEL=warn. BASELINE picks what guards the private routes:
// - `bare`: nothing; the ratio to it is what authentication costs in all;
// - `cached`: the ideal reused-token path, the floor of (a)-(c): an onRequest hook that looks the raw
//   Authorization value up in a Map of verified claims (checking `exp`) and verifies on a miss;
// - `uncached`: the ideal new-token path, the floor of (d): the same check with no Map.
// The check is the least a correct verifier does: bearer parse, RS256 with a KeyObject parsed at startup,
// JSON payload, `exp`/`iss`/`aud`, and the route's scope.
import Fastify, { LogController } from 'fastify'
import { createPublicKey, verify } from 'node:crypto'

const { BASELINE = 'bare', AUTH0_ISSUER_URL: ISSUER, AUTH0_AUDIENCE: AUDIENCE } = process.env

const schema = { response: { 200: { type: 'object', properties: { message: { type: 'string' } } } } }
const app = Fastify({
  logger: { level: 'warn', redact: { paths: ['req.headers.authorization', 'req.headers.cookie'], censor: '[redacted]' } },
  logController: new LogController({ disableRequestLogging: true }),
})

let guard = {}
let scopedGuard = {}
if (BASELINE !== 'bare') {
  const { keys: [jwk] } = await (await fetch(`${ISSUER}.well-known/jwks.json`)).json()
  const key = createPublicKey({ key: jwk, format: 'jwk' })
  const verified = BASELINE === 'cached' ? new Map() : undefined
  const unauthorized = (reply) => reply.code(401).send({ statusCode: 401, error: 'Unauthorized', message: 'Unauthorized' })

  const claimsOf = (authorization) => {
    if (authorization === undefined || !authorization.startsWith('Bearer ')) return undefined
    const token = authorization.slice(7)
    const signed = token.lastIndexOf('.')
    const payloadStart = token.indexOf('.') + 1
    if (!verify('sha256', Buffer.from(token.slice(0, signed)), key, Buffer.from(token.slice(signed + 1), 'base64url'))) return undefined
    const claims = JSON.parse(Buffer.from(token.slice(payloadStart, signed), 'base64url').toString())
    const audiences = Array.isArray(claims.aud) ? claims.aud : [claims.aud]
    return typeof claims.exp === 'number' && claims.iss === ISSUER && audiences.includes(AUDIENCE) ? claims : undefined
  }

  const authenticate = (scope) => (request, reply, done) => {
    const authorization = request.headers.authorization
    let claims = verified?.get(authorization)
    if (claims === undefined || claims.exp * 1000 <= Date.now()) {
      claims = claimsOf(authorization)
      if (claims === undefined || claims.exp * 1000 <= Date.now()) return unauthorized(reply)
      verified?.set(authorization, claims)
    }
    if (scope !== undefined && !(typeof claims.scope === 'string' && claims.scope.split(' ').includes(scope))) {
      return reply.code(403).send({ statusCode: 403, error: 'Forbidden', message: 'Forbidden' })
    }
    request.user = claims
    done()
  }
  app.decorateRequest('user', null)
  guard = { onRequest: authenticate() }
  scopedGuard = { onRequest: authenticate('read:messages') }
}

// The service's own handlers: plain functions returning constant bodies.
const PUBLIC = { message: 'Hello from a public endpoint! You don\'t need to be authenticated to see this.' }
const PRIVATE = { message: 'Hello from a private endpoint! You need to be authenticated to see this.' }
const SCOPED = { message: 'Hello from a private endpoint! You need to be authenticated and have a scope of read:messages to see this.' }
app.get('/api/public', { schema }, () => PUBLIC)
app.get('/api/private', { schema, ...guard }, () => PRIVATE)
app.get('/api/private-scoped', { schema, ...scopedGuard }, () => SCOPED)
app.get('/ready', async () => ({ status: 'ready' }))
await app.listen({ port: Number(process.env.PORT), host: '127.0.0.1' })
