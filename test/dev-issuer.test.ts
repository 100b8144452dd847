import t from 'tap'
import { buildApp, bearer, startIssuer } from './helpers/app.js'

t.test('the dev issuer end to end over real HTTP: mint, then call', async (t) => {
  const app = await buildApp(t, undefined)
  const base = await app.listen({ port: 0, host: '127.0.0.1' })
  t.match(app.devIssuer?.issuer, /^http:\/\/127\.0\.0\.1:\d+\/$/, 'the dev issuer serves its JWKS on a port of its own')

  const mint = async (body?: object): Promise<{ access_token: string, token_type: string, expires_in: number }> => {
    const response = await fetch(`${base}/dev/token`, {
      method: 'POST',
      ...(body && { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
    })
    t.equal(response.status, 200)
    return await response.json() as { access_token: string, token_type: string, expires_in: number }
  }
  const get = async (path: string, token?: string): Promise<number> =>
    (await fetch(`${base}${path}`, token ? { headers: bearer(token) } : {})).status

  const plain = await mint()
  t.equal(plain.token_type, 'Bearer')
  t.equal(plain.expires_in, 3600)
  const scoped = await mint({ scope: 'read:messages' })
  const permitted = await mint({ permissions: ['read:messages'], sub: 'alice', expiresIn: 60 })
  t.equal(permitted.expires_in, 60)
  const claims = JSON.parse(Buffer.from(permitted.access_token.split('.')[1]!, 'base64url').toString())
  t.match(claims, { sub: 'alice', aud: 'dev-api', iss: app.devIssuer?.issuer, permissions: ['read:messages'], client_id: 'dev-client', jti: /^[0-9a-f-]{36}$/ })
  t.equal(claims.exp - claims.iat, 60)
  t.match(JSON.parse(Buffer.from(permitted.access_token.split('.')[0]!, 'base64url').toString()), { alg: 'RS256', typ: 'at+jwt' }, 'an RFC 9068 access token')

  t.equal(await get('/api/public'), 200)
  t.equal(await get('/api/private'), 401)
  t.equal(await get('/api/private', plain.access_token), 200)
  t.equal(await get('/api/private-scoped', plain.access_token), 403)
  t.equal(await get('/api/private-scoped', scoped.access_token), 200)
  t.equal(await get('/api/private-scoped', permitted.access_token), 200)
  t.equal(await get('/ready'), 200)
  const discovery = await (await fetch(`${app.devIssuer?.issuer}.well-known/openid-configuration`)).json() as Record<string, unknown>
  t.match(discovery, { issuer: app.devIssuer?.issuer, jwks_uri: `${app.devIssuer?.issuer}.well-known/jwks.json` }, 'discovery, as a real issuer serves it')
  t.equal((await fetch(`${app.devIssuer?.issuer}.well-known/other`)).status, 404, 'the dev issuer serves its metadata and JWKS, nothing else')
  t.equal((await fetch(`${app.devIssuer?.issuer}__proto__`)).status, 404)
  t.equal((await fetch(`${app.devIssuer?.issuer}.well-known/jwks.json`, { method: 'POST' })).status, 404, 'GET only')
})

t.test('POST /dev/token validates what it is asked for', async (t) => {
  const app = await buildApp(t, undefined)
  for (const body of [{ expiresIn: 0 }, { expiresIn: 999_999 }, { expiresIn: 'soon' }, { scope: { all: true } }, { permissions: [{}] }, { sub: '' }]) {
    const response = await app.inject({ method: 'POST', url: '/dev/token', payload: body })
    t.equal(response.statusCode, 400, JSON.stringify(body))
    t.match(response.json(), { statusCode: 400, error: 'Bad Request', code: 'FST_ERR_VALIDATION' })
  }
  const broken = await app.inject({ method: 'POST', url: '/dev/token', headers: { 'content-type': 'application/json' }, payload: '{"scope":' })
  t.equal(broken.statusCode, 400)
  const huge = await app.inject({ method: 'POST', url: '/dev/token', headers: { 'content-type': 'application/json' }, payload: JSON.stringify({ scope: 'x'.repeat(100_000) }) })
  t.equal(huge.statusCode, 413)
})

t.test('with an issuer configured there is no dev issuer and no /dev/token', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer)
  t.equal(app.devIssuer, null)
  t.equal((await app.inject({ method: 'POST', url: '/dev/token' })).statusCode, 404)
})
