import t from 'tap'
import { buildApp, bearer, startIssuer } from './helpers/app.js'

const preflight = (origin: string) => ({
  method: 'OPTIONS' as const,
  url: '/api/private-scoped',
  headers: { origin, 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' },
})

t.test('CORS for the configured origins', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer, { CORS_ORIGINS: 'https://app.example.com,https://admin.example.com' })

  const allowed = await app.inject(preflight('https://app.example.com'))
  t.equal(allowed.statusCode, 204, 'a preflight to a protected route needs no token')
  t.equal(allowed.headers['access-control-allow-origin'], 'https://app.example.com')
  t.match(allowed.headers['access-control-allow-headers'], /Authorization/)

  const denied = await app.inject(preflight('https://evil.example'))
  t.equal(denied.headers['access-control-allow-origin'], undefined, 'another origin is not allowed')

  const unauthorized = await app.inject({ url: '/api/private', headers: { origin: 'https://admin.example.com' } })
  t.equal(unauthorized.statusCode, 401)
  t.equal(unauthorized.headers['access-control-allow-origin'], 'https://admin.example.com', 'errors carry CORS headers too')
  t.match(unauthorized.headers['access-control-expose-headers'], /WWW-Authenticate/, 'scripts can read the challenge')

  const ok = await app.inject({ url: '/api/private', headers: { origin: 'https://app.example.com', ...bearer(issuer.token()) } })
  t.equal(ok.statusCode, 200)
  t.equal(ok.headers['access-control-allow-origin'], 'https://app.example.com')
})

t.test('CORS_ORIGINS=* allows any origin', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer, { CORS_ORIGINS: '*' })
  t.equal((await app.inject(preflight('https://anyone.example'))).headers['access-control-allow-origin'], '*')
})

t.test('no CORS_ORIGINS, no CORS headers', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer)
  const response = await app.inject({ url: '/api/public', headers: { origin: 'https://app.example.com' } })
  t.equal(response.statusCode, 200)
  t.equal(response.headers['access-control-allow-origin'], undefined)
  t.equal((await app.inject(preflight('https://app.example.com'))).statusCode, 404)
})
