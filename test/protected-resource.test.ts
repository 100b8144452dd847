import t from 'tap'
import { buildApp, bearer, startIssuer } from './helpers/app.js'

// RFC 9728: what an OAuth client (an MCP client, say) reads to find its way from a 401 to a token.

const METADATA = 'https://api.example.test/.well-known/oauth-protected-resource'
const ALGS = 'ES256 ES384 ES512 PS256 PS384 PS512 RS256 EdDSA'

t.test('the metadata document: the resource, its issuers and every scope a route asks for', async (t) => {
  const issuer = await startIssuer(t)
  const second = await startIssuer(t)
  const app = await buildApp(t, issuer, { PUBLIC_URL: 'https://api.example.test', RESOURCE_NAME: 'Example API', AUTH0_ISSUER_URL: `${issuer.issuer},${second.issuer}` }, async (app) => {
    app.get('/api/reports', { config: { auth: { scopes: { anyOf: ['admin', 'read:messages'] } } } }, async () => 'x')
  })
  const response = await app.inject('/.well-known/oauth-protected-resource')
  t.equal(response.statusCode, 200)
  t.same(response.json(), {
    resource: 'https://api.example.test',
    authorization_servers: [issuer.issuer, second.issuer],
    scopes_supported: ['admin', 'read:messages'],
    bearer_methods_supported: ['header'],
    resource_name: 'Example API',
    dpop_signing_alg_values_supported: ALGS.split(' '),
    dpop_bound_access_tokens_required: false,
  })
  const required = await buildApp(t, issuer, { PUBLIC_URL: 'https://api.example.test', AUTH0_DPOP: 'required', AUTH0_DPOP_ALGORITHMS: 'ES256' })
  t.match((await required.inject('/.well-known/oauth-protected-resource')).json(), { dpop_signing_alg_values_supported: ['ES256'], dpop_bound_access_tokens_required: true })
})

t.test('a PUBLIC_URL with a path: the path-inserted location too; members with no value left out', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer, { PUBLIC_URL: 'https://api.example.test/v1/', AUTH0_DPOP: 'disabled' }, async (app) => {
    app.get('/api/only-token', { config: { auth: true } }, async () => 'x')
  })
  const document = { resource: 'https://api.example.test/v1/', authorization_servers: [issuer.issuer], scopes_supported: ['read:messages'], bearer_methods_supported: ['header'] }
  t.same((await app.inject('/.well-known/oauth-protected-resource/v1')).json(), document)
  t.same((await app.inject('/.well-known/oauth-protected-resource')).json(), document)
  const missing = await app.inject({ url: '/api/private' })
  t.equal(missing.headers['www-authenticate'], 'Bearer realm="api", resource_metadata="https://api.example.test/.well-known/oauth-protected-resource/v1"')
})

t.test('every 401 and 403 names the metadata; a 401 from a route with scopes names them too', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer, { PUBLIC_URL: 'https://api.example.test/' })
  const cases: [string, Record<string, string>, number, string][] = [
    ['/api/private', {}, 401, `Bearer realm="api", resource_metadata="${METADATA}", DPoP algs="${ALGS}", resource_metadata="${METADATA}"`],
    ['/api/private-scoped', {}, 401, `Bearer realm="api", scope="read:messages", resource_metadata="${METADATA}", DPoP algs="${ALGS}", scope="read:messages", resource_metadata="${METADATA}"`],
    ['/api/private-scoped', bearer('junk'), 401, `Bearer realm="api", error="invalid_token", error_description="Token is malformed or its signature is invalid", scope="read:messages", resource_metadata="${METADATA}"`],
    ['/api/private', { authorization: 'Basic x' }, 401, `Bearer realm="api", error="invalid_request", error_description="Authorization header must be Bearer or DPoP followed by one token", resource_metadata="${METADATA}"`],
    ['/api/private-scoped', bearer(issuer.token()), 403, `Bearer realm="api", error="insufficient_scope", error_description="Token does not grant the scope this route requires", scope="read:messages", resource_metadata="${METADATA}"`],
  ]
  for (const [url, headers, status, challenge] of cases) {
    const response = await app.inject({ url, headers })
    t.equal(response.statusCode, status, url)
    t.equal(response.headers['www-authenticate'], challenge)
  }
  const repeated = await app.inject({ url: '/api/private-scoped', headers: bearer('junk') })
  t.equal(repeated.headers['www-authenticate'], cases[2]![3], 'the same answer from the route\'s remembered challenges')
})

t.test('without PUBLIC_URL: no metadata, and challenges as RFC 6750 has them', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer)
  t.equal((await app.inject('/.well-known/oauth-protected-resource')).statusCode, 404)
  t.equal((await app.inject('/api/private-scoped')).headers['www-authenticate'], `Bearer realm="api", DPoP algs="${ALGS}"`)
})
