import t from 'tap'
import { bearerToken } from '../lib/bearer.js'
import { loadConfig } from '../lib/config.js'
import { loggerOptions } from '../lib/logging.js'
import { AuthError } from '../lib/errors.js'
import { grantedScopes, isSatisfied, scopeRequirement } from '../lib/scopes.js'
import { toAuthError } from '../lib/token-errors.js'

t.test('bearerToken follows RFC 6750 §2.1', async (t) => {
  t.equal(bearerToken('Bearer abc.DEF-_~+/.x=='), 'abc.DEF-_~+/.x==')
  t.equal(bearerToken('bearer a.b.c'), 'a.b.c', 'the scheme is case-insensitive')
  t.equal(bearerToken('BEARER   a.b.c  '), 'a.b.c', 'extra spaces around the token')
  for (const header of ['', 'Bearer', 'Bearer ', 'Basic a.b.c', 'Bearera.b.c', 'Bearer a.b.c d', 'Bearer a"b', 'Bearer a=b', 'Bearer\ta.b.c', 'Token a.b.c']) {
    t.throws(() => bearerToken(header), { code: 'invalid_header' }, JSON.stringify(header))
  }
  t.throws(() => bearerToken(undefined), { code: 'authorization_header_missing' })
})

t.test('scopes from the scope string and the permissions array', async (t) => {
  t.same([...grantedScopes({ scope: ' a  b ', permissions: ['c', 1, 'a'] })].sort(), ['a', 'b', 'c'])
  t.same([...grantedScopes({ scope: ['a'], permissions: 'b' })], [])
  t.same([...grantedScopes({})], [])
  const all = scopeRequirement({ scopes: ['a', 'b'] }, 'route')!
  const any = scopeRequirement({ scopes: { anyOf: ['a', 'b'] } }, 'route')!
  t.ok(isSatisfied(all, new Set(['a', 'b', 'c'])))
  t.notOk(isSatisfied(all, new Set(['a'])))
  t.ok(isSatisfied(any, new Set(['b'])))
  t.notOk(isSatisfied(any, new Set(['c'])))
  t.equal(scopeRequirement(true, 'route'), undefined, '`true` asks for a valid token only')
})

t.test('token errors are mapped by code; anything else is ours and rethrown', async (t) => {
  const own = new AuthError('invalid_header', 'x')
  t.equal(toAuthError(own), own)
  t.equal(toAuthError({ code: 'FST_JWT_AUTHORIZATION_TOKEN_EXPIRED' }).code, 'token_expired')
  t.equal(toAuthError({ code: 'FAST_JWT_SOMETHING_NEW' }).code, 'invalid_token', 'an unforeseen token error is still a 401')
  const bug = new TypeError('a bug')
  t.throws(() => toAuthError(bug), bug)
  t.throws(() => toAuthError(null))
})

t.test('logs: JSON with credentials redacted; pretty only for a developer at a terminal', async (t) => {
  const dev = loadConfig({ LOG_LEVEL: 'debug' })
  const production = loadConfig({ NODE_ENV: 'production', AUTH0_DOMAIN: 'tenant.auth0.com', AUTH0_AUDIENCE: 'api' })
  t.match(loggerOptions(dev, false), { level: 'debug', redact: { paths: ['req.headers.authorization', 'req.headers.cookie'] } })
  t.notOk((loggerOptions(dev, false) as { transport?: unknown }).transport, 'JSON when not a terminal')
  t.match(loggerOptions(dev, true), { transport: { target: 'pino-pretty' } })
  t.notOk((loggerOptions(production, true) as { transport?: unknown }).transport, 'JSON in production, terminal or not')
})
