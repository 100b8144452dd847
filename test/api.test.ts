import type { FastifyRequest } from 'fastify'
import t from 'tap'
import { buildApp, bearer, startIssuer } from './helpers/app.js'

const PUBLIC = { message: 'Hello from a public endpoint! You don\'t need to be authenticated to see this.' }
const PRIVATE = { message: 'Hello from a private endpoint! You need to be authenticated to see this.' }
const SCOPED = { message: 'Hello from a private endpoint! You need to be authenticated and have a scope of read:messages to see this.' }

t.test('the three routes with real tokens from a real issuer', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer)

  const pub = await app.inject('/api/public')
  t.equal(pub.statusCode, 200)
  t.same(pub.json(), PUBLIC)

  const priv = await app.inject({ url: '/api/private', headers: bearer(issuer.token()) })
  t.equal(priv.statusCode, 200)
  t.same(priv.json(), PRIVATE)

  const byScope = await app.inject({ url: '/api/private-scoped', headers: bearer(issuer.token({ scope: 'openid read:messages write:messages' })) })
  t.equal(byScope.statusCode, 200)
  t.same(byScope.json(), SCOPED)

  const byPermission = await app.inject({ url: '/api/private-scoped', headers: bearer(issuer.token({ permissions: ['read:messages'] })) })
  t.equal(byPermission.statusCode, 200, 'Auth0 RBAC permissions grant scopes too')

  const audienceList = await app.inject({ url: '/api/private', headers: bearer(issuer.token({ aud: ['https://other.example', 'https://api.example.test'] })) })
  t.equal(audienceList.statusCode, 200, 'an aud array containing our audience is accepted')
})

t.test('keys published elsewhere: found through discovery, or at AUTH0_JWKS_URL without it', async (t) => {
  const issuer = await startIssuer(t)
  issuer.jwksPath = '/protocol/openid-connect/certs'
  const discovered = await buildApp(t, issuer)
  t.equal((await discovered.inject({ url: '/api/private', headers: bearer(issuer.token()) })).statusCode, 200, 'the metadata\'s jwks_uri')
  t.equal(issuer.discoveryRequests, 1)
  issuer.discovery = 'none'
  const configured = await buildApp(t, issuer, { AUTH0_JWKS_URL: `${issuer.url}protocol/openid-connect/certs` })
  t.equal((await configured.inject({ url: '/api/private', headers: bearer(issuer.token()) })).statusCode, 200, 'AUTH0_JWKS_URL')
  t.equal(issuer.discoveryRequests, 1, 'no discovery with AUTH0_JWKS_URL')
})

t.test('every row of the error table', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer)
  const now = Math.floor(Date.now() / 1000)

  const rows: { name: string, url?: string, headers: Record<string, string>, status: number, code: string, challenge: string }[] = [
    { name: 'no Authorization header', headers: {}, status: 401, code: 'authorization_header_missing', challenge: 'Bearer realm="api"' },
    { name: 'Basic credentials', headers: { authorization: 'Basic dXNlcjpwYXNz' }, status: 401, code: 'invalid_header', challenge: 'error="invalid_request"' },
    { name: 'two tokens', headers: { authorization: 'Bearer a.b.c d.e.f' }, status: 401, code: 'invalid_header', challenge: 'error="invalid_request"' },
    { name: 'scheme only', headers: { authorization: 'Bearer' }, status: 401, code: 'invalid_header', challenge: 'error="invalid_request"' },
    { name: 'empty header', headers: { authorization: '' }, status: 401, code: 'invalid_header', challenge: 'error="invalid_request"' },
    { name: 'expired token', headers: bearer(issuer.token({ exp: now - 60 })), status: 401, code: 'token_expired', challenge: 'error="invalid_token"' },
    { name: 'wrong issuer', headers: bearer(issuer.token({ iss: 'https://evil.example/' })), status: 401, code: 'invalid_claims', challenge: 'error="invalid_token"' },
    { name: 'wrong audience', headers: bearer(issuer.token({ aud: 'https://other.example' })), status: 401, code: 'invalid_claims', challenge: 'error="invalid_token"' },
    { name: 'missing exp', headers: bearer(issuer.token({ exp: undefined })), status: 401, code: 'invalid_claims', challenge: 'error="invalid_token"' },
    { name: 'garbage token', headers: bearer('not-a-jwt'), status: 401, code: 'invalid_token', challenge: 'error="invalid_token"' },
    {
      name: 'valid token without the scope',
      url: '/api/private-scoped',
      headers: bearer(issuer.token({ scope: 'read:other' })),
      status: 403,
      code: 'insufficient_scope',
      challenge: 'error="insufficient_scope", error_description="Token does not grant the scope this route requires", scope="read:messages"',
    },
  ]
  for (const row of rows) {
    const response = await app.inject({ url: row.url ?? '/api/private', headers: row.headers })
    t.equal(response.statusCode, row.status, `${row.name}: status`)
    const body = response.json()
    t.equal(body.code, row.code, `${row.name}: code`)
    t.same(Object.keys(body).sort(), ['code', 'error', 'message', 'statusCode'], `${row.name}: Fastify's error shape`)
    t.equal(body.statusCode, row.status)
    t.ok(response.headers['www-authenticate']?.toString().startsWith('Bearer realm="api"'), `${row.name}: RFC 6750 challenge`)
    t.match(response.headers['www-authenticate'], row.challenge, `${row.name}: challenge attributes`)
    // RFC 6750 §3: attribute values are %x20-21 / %x23-5B / %x5D-7E
    for (const [, value] of String(response.headers['www-authenticate']).matchAll(/="([^"]*)"/g)) {
      t.match(value, /^[\x20\x21\x23-\x5B\x5D-\x7E]*$/, `${row.name}: challenge value stays in RFC 6750's character set`)
    }
  }
  t.notMatch(String((await app.inject('/api/private')).headers['www-authenticate']), 'error=', 'a missing header gets a bare challenge (RFC 6750 §3.1)')
})

t.test('wrong-type claims grant nothing', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer)
  for (const claims of [{ scope: ['read:messages'] }, { permissions: 'read:messages' }, { permissions: [42, { scope: 'read:messages' }] }, { scope: 'read:messagesX' }]) {
    const response = await app.inject({ url: '/api/private-scoped', headers: bearer(issuer.token(claims)) })
    t.equal(response.statusCode, 403, JSON.stringify(claims))
  }
})

t.test('a route a user adds is protected by one line of config, and sees the typed claims', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer, {}, async (app) => {
    app.get('/api/me', { config: { auth: true } }, async (request) => ({ sub: request.user.sub, iss: request.user.iss }))
    app.get('/api/reports', { config: { auth: { scopes: ['read:reports', 'export:reports'] } } }, async () => 'all of')
    app.get('/api/either', { config: { auth: { scopes: { anyOf: ['admin', 'read:reports'] } } } }, async () => 'any of')
    app.get('/api/hooked', {
      config: { auth: { scopes: ['read:reports'] } },
      // the route's own hooks run after authentication and the scope check
      onRequest: [async (request, reply) => { reply.header('x-subject', request.user.sub) }],
      preHandler: [async (_request, reply) => { reply.header('x-scoped', 'yes') }],
    }, async () => 'hooked')
    app.get('/api/hooked-once', { config: { auth: true }, onRequest: async (_request, reply) => { reply.header('x-once', 'yes') } }, async () => 'once')
  })
  const me = await app.inject({ url: '/api/me', headers: bearer(issuer.token({ sub: 'auth0|42' })) })
  t.same(me.json(), { sub: 'auth0|42', iss: issuer.url })
  t.equal((await app.inject('/api/me')).statusCode, 401)

  const one = bearer(issuer.token({ scope: 'read:reports' }))
  const both = bearer(issuer.token({ scope: 'read:reports', permissions: ['export:reports'] }))
  t.equal((await app.inject({ url: '/api/reports', headers: one })).statusCode, 403, 'all-of needs every scope')
  t.match((await app.inject({ url: '/api/reports', headers: one })).headers['www-authenticate'], 'scope="read:reports export:reports"')
  t.equal((await app.inject({ url: '/api/reports', headers: both })).statusCode, 200, 'scope and permissions combine')
  t.equal((await app.inject({ url: '/api/either', headers: one })).statusCode, 200, 'any-of needs one')
  t.equal((await app.inject({ url: '/api/either', headers: bearer(issuer.token({ scope: 'openid' })) })).statusCode, 403)

  const hooked = await app.inject({ url: '/api/hooked', headers: one })
  t.equal(hooked.headers['x-subject'], 'user-1')
  t.equal(hooked.headers['x-scoped'], 'yes')
  t.equal((await app.inject('/api/hooked')).statusCode, 401)
  t.equal((await app.inject({ url: '/api/hooked-once', headers: one })).headers['x-once'], 'yes')
})

t.test('an unexpected error is a bare 500 with nothing of its message', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer, {}, async (app) => {
    app.get('/api/broken', async () => { throw new Error('database password is hunter2') })
    app.get('/api/teapot', async () => { throw Object.assign(new Error('short and stout'), { statusCode: 418 }) })
  })
  const broken = await app.inject('/api/broken')
  t.equal(broken.statusCode, 500)
  t.same(broken.json(), { statusCode: 500, error: 'Internal Server Error', message: 'Internal Server Error' })
  const teapot = await app.inject('/api/teapot')
  t.same(teapot.json(), { statusCode: 418, error: 'I\'m a Teapot', message: 'short and stout' }, 'a deliberate 4xx keeps its message')
})

t.test('a rejected token leaves nothing on request.user', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer, {}, async (app) => {
    // a route that authenticates optionally, by calling the decorator itself
    app.get('/api/maybe', async (request) => {
      const authenticated = await app.authenticate(request).then(() => true, () => false)
      return { authenticated, user: request.user }
    })
  })
  const otherAudience = await app.inject({ url: '/api/maybe', headers: bearer(issuer.token({ aud: 'https://other.example', sub: 'victim' })) })
  t.same(otherAudience.json(), { authenticated: false, user: null })
  const valid = await app.inject({ url: '/api/maybe', headers: bearer(issuer.token()) })
  t.match(valid.json(), { authenticated: true, user: { sub: 'user-1' } })

  const bug = new TypeError('not an auth failure')
  const broken = { get headers (): never { throw bug } } as unknown as FastifyRequest
  await t.rejects(app.authenticate(broken), bug, 'an error that is not a refusal goes on as it is, to be a logged 500')
})

t.test('optional authentication: anonymous without a header, but a header must hold a valid token', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer, {}, async (app) => {
    app.get('/api/greeting', { config: { auth: 'optional' } }, async (request) => ({ hello: request.user?.sub ?? 'stranger' }))
  })
  t.same((await app.inject('/api/greeting')).json(), { hello: 'stranger' }, 'no header: the handler runs, request.user null')
  t.same((await app.inject({ url: '/api/greeting', headers: bearer(issuer.token({ sub: 'auth0|7' })) })).json(), { hello: 'auth0|7' })
  for (const [headers, code] of [[bearer(issuer.token({ aud: 'https://other.example' })), 'invalid_claims'], [bearer('junk'), 'invalid_token'], [{ authorization: 'Basic dXNlcjpwYXNz' }, 'invalid_header'], [{ authorization: '' }, 'invalid_header']] as const) {
    const response = await app.inject({ url: '/api/greeting', headers })
    t.equal(response.statusCode, 401, `${code}: never a silent anonymous request`)
    t.equal(response.json().code, code)
  }
})

t.test('a token without the scope is refused before the body is read', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer, {}, async (app) => {
    app.post('/api/messages', {
      config: { auth: { scopes: ['write:messages'] } },
      schema: { body: { type: 'object', required: ['text'], properties: { text: { type: 'string' } } } },
    }, async () => 'created')
  })
  const response = await app.inject({ method: 'POST', url: '/api/messages', headers: bearer(issuer.token({ scope: 'read:messages' })), payload: { wrong: 1 } })
  t.equal(response.statusCode, 403)
  t.equal(response.json().code, 'insufficient_scope')
})

t.test('a mistaken route config fails at startup, not per request', async (t) => {
  const issuer = await startIssuer(t)
  const mistakes = [{ scopes: [] }, { scopes: ['has space'] }, { scopes: { anyOf: [] } }, { scopes: 'read:messages' }, { scopes: ['say "hi"'] }, {}]
  for (const auth of mistakes) {
    await t.rejects(buildApp(t, issuer, {}, async (app) => {
      app.get('/x', { config: { auth: auth as never } }, async () => 'x')
    }), /GET \/x: config.auth must be/, JSON.stringify(auth))
  }
})
