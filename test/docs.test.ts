import type { FastifyInstance, FastifySchema } from 'fastify'
import t from 'tap'
import { describePolicy, errorResponses, securityRequirements, securitySchemes, withoutOpenIdConnect, type DocumentedAuth, type SecuredDocument, type SecurityRequirement } from '../lib/openapi.js'
import type { RoutePolicy } from '../lib/tokens/scopes.js'
import { buildApp, bearer, startIssuer } from './helpers/app.js'

// OpenAPI 3.1 at /openapi.json and the swagger-ui page at /docs: what each route's config.auth says is what
// the document says, and the docs change nothing the API routes do.

// What the helpers below assert with: the subtest they run in.
type Tap = Pick<typeof t, 'equal' | 'ok'>

interface Operation {
  summary?: string
  description?: string
  security?: SecurityRequirement[]
  responses: Record<string, { description: string, headers?: Record<string, unknown>, content?: { 'application/json': { schema: ErrorSchema } } }>
}
interface ErrorSchema {
  required: string[]
  properties: { statusCode: { enum: number[] }, error: { enum: string[] }, code: { enum: string[] } }
}
interface Document {
  openapi: string
  info: { title: string, version: string, description: string }
  servers?: { url: string }[]
  components: { securitySchemes: Record<string, { type: string, scheme?: string, openIdConnectUrl?: string }> }
  paths: Record<string, Record<string, Operation>>
}

const DEV: DocumentedAuth = { issuers: ['https://login.example.com/'], dpopMode: 'allowed', dpopAlgorithms: ['ES256', 'EdDSA'], devIssuer: false }
const ANY_TOKEN: RoutePolicy = { optional: false, requirement: undefined }
const OPTIONAL: RoutePolicy = { optional: true, requirement: undefined }
const ALL_OF: RoutePolicy = { optional: false, requirement: { match: 'all', scopes: ['read:reports', 'export:reports'] } }
const ANY_OF: RoutePolicy = { optional: false, requirement: { match: 'any', scopes: ['admin', 'read:audit'] } }

/** Routes as a user adds them: every kind of config.auth, a prefix, a path parameter, a POST, no schema at all. */
async function userRoutes (app: FastifyInstance) {
  app.get('/api/me', { config: { auth: true } }, async (request) => ({ sub: request.user.sub }))
  app.get('/api/reports', { config: { auth: { scopes: ['read:reports', 'export:reports'] } } }, async () => [])
  app.get('/api/audit', { config: { auth: { scopes: { anyOf: ['admin', 'read:audit'] } } } }, async () => [])
  app.get('/api/greeting', {
    schema: { summary: 'A greeting', description: 'Says hello.' },
    config: { auth: 'optional' },
  }, async (request) => ({ hello: request.user?.sub ?? 'stranger' }))
  await app.register(async (v2) => {
    v2.post('/items/:id', { config: { auth: { scopes: ['write:items'] } } }, async () => ({}))
    v2.get('/status', async () => ({ ok: true }))
  }, { prefix: '/api/v2' })
  // An error body with more than the contract's fields: the docs must not cut it down.
  const okOnly: FastifySchema = { response: { 200: { type: 'object', properties: { ok: { type: 'boolean' } } } } }
  app.get('/api/teapot', { schema: okOnly, config: { auth: true } }, async (_request, reply) =>
    reply.code(403).send({ statusCode: 403, error: 'Forbidden', code: 'custom', message: 'Not today', detail: 'kept' }))
}

async function openapi (t: Tap, app: FastifyInstance, url = '/openapi.json'): Promise<Document> {
  const response = await app.inject(url)
  t.equal(response.statusCode, 200, `${url} answers`)
  return response.json()
}

/** The policy a documented security list states, read back the way a client would read it. */
function documentedPolicy (t: Tap, security: SecurityRequirement[] | undefined, schemes: string[]): RoutePolicy | undefined {
  if (security === undefined) {
    return undefined
  }
  const scopeSets = new Map<string, string[][]>(schemes.map((scheme) => [scheme, []]))
  for (const requirement of security) {
    for (const [scheme, scopes] of Object.entries(requirement)) {
      scopeSets.get(scheme)!.push(scopes)
    }
  }
  const [sets, ...others] = [...scopeSets.values()]
  t.ok(others.every((other) => JSON.stringify(other) === JSON.stringify(sets)), 'every scheme carries the same scopes')
  const scoped = sets!.filter((scopes) => scopes.length > 0)
  return normalized({
    optional: security.some((requirement) => Object.keys(requirement).length === 0),
    requirement: scoped.length === 0 ? undefined : scoped.length === 1 ? { match: 'all', scopes: scoped[0]! } : { match: 'any', scopes: scoped.map(([scope]) => scope!) },
  })
}

/** One scope needed is one scope needed, whether the route said all-of or any-of. */
function normalized (policy: RoutePolicy | undefined): RoutePolicy | undefined {
  return policy?.requirement?.scopes.length === 1 ? { ...policy, requirement: { match: 'all', scopes: policy.requirement.scopes } } : policy
}

function openapiPath (url: string): string {
  return url.replace(/:(\w+)/g, '{$1}')
}

/** Each route's hooks as `app.printRoutes({ includeHooks: true })` shows them, by `METHOD path`. */
function routeHooks (app: FastifyInstance): Map<string, string[]> {
  const fragments: string[] = []
  const hooks = new Map<string, string[]>()
  let current: string[] = []
  for (const line of app.printRoutes({ includeHooks: true, commonPrefix: false }).split('\n')) {
    const route = /^([│├└─ ]*)([^│├└─ •]\S*) \(([A-Z, ]+)\)$/.exec(line)
    if (route !== null) {
      const level = route[1]!.length / 4
      fragments.length = level
      fragments[level - 1] = route[2]!
      current = route[3]!.split(', ').map((method) => `${method} ${fragments.join('')}`)
      current.forEach((key) => hooks.set(key, []))
    } else if (line.includes('• ')) {
      current.forEach((key) => hooks.get(key)!.push(line.slice(line.indexOf('• ') + 2)))
    }
  }
  return hooks
}

t.test('security schemes: bearer, DPoP as an http scheme, an openIdConnect scheme per issuer at its discovery URL', async (t) => {
  const allowed = securitySchemes(DEV)
  t.same(Object.keys(allowed), ['bearer', 'dpop', 'oidc'])
  t.match(allowed.bearer, { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' })
  t.notMatch(allowed.bearer!.description, 'POST /dev/token', 'no dev-issuer hint with a real issuer')
  t.match(allowed.dpop, { type: 'http', scheme: 'DPoP', description: /RFC 9449.*ES256, EdDSA/ })
  t.same(allowed.oidc, { type: 'openIdConnect', openIdConnectUrl: 'https://login.example.com/.well-known/openid-configuration', description: 'Where tokens come from: https://login.example.com/. They are sent as the http schemes say.' })

  t.same(Object.keys(securitySchemes({ ...DEV, dpopMode: 'disabled' })), ['bearer', 'oidc'], 'DPoP disabled: no dpop scheme')
  t.notMatch(securitySchemes({ ...DEV, dpopMode: 'disabled' }).bearer!.description, 'dpop')
  t.same(Object.keys(securitySchemes({ ...DEV, dpopMode: 'required' })), ['dpop', 'oidc'], 'DPoP required: no bearer scheme')
  const several = securitySchemes({ ...DEV, issuers: ['https://login.example.com/', 'https://sso.example.com/realms/main', 'https://example.okta.com/oauth2/default'] })
  t.same(Object.entries(several).filter(([, scheme]) => scheme.type === 'openIdConnect').map(([name, scheme]) => [name, (scheme as { openIdConnectUrl: string }).openIdConnectUrl]), [
    ['oidc', 'https://login.example.com/.well-known/openid-configuration'],
    ['oidc2', 'https://sso.example.com/realms/main/.well-known/openid-configuration'],
    ['oidc3', 'https://example.okta.com/oauth2/default/.well-known/openid-configuration'],
  ], 'one each, at <issuer without trailing slash>/.well-known/openid-configuration')
  t.match(securitySchemes({ ...DEV, devIssuer: true }).bearer!.description, 'POST /dev/token')
})

t.test('security requirements: every token scheme with the route\'s scopes; any-of one requirement per scope; optional adds {}', async (t) => {
  const schemes = securitySchemes({ ...DEV, dpopMode: 'disabled' })
  t.same(securityRequirements(ANY_TOKEN, schemes), [{ bearer: [] }, { oidc: [] }])
  t.same(securityRequirements(OPTIONAL, schemes), [{ bearer: [] }, { oidc: [] }, {}])
  t.same(securityRequirements(ALL_OF, schemes), [{ bearer: ['read:reports', 'export:reports'] }, { oidc: ['read:reports', 'export:reports'] }])
  t.same(securityRequirements(ANY_OF, schemes), [{ bearer: ['admin'] }, { bearer: ['read:audit'] }, { oidc: ['admin'] }, { oidc: ['read:audit'] }])

  t.equal(describePolicy(undefined), 'No access token needed')
  t.equal(describePolicy(ANY_TOKEN), 'Needs a valid access token')
  t.match(describePolicy(OPTIONAL), /^Access token optional/)
  t.equal(describePolicy(ALL_OF), 'Needs an access token granting read:reports and export:reports')
  t.equal(describePolicy(ANY_OF), 'Needs an access token granting one of admin, read:audit')
})

t.test('error responses: the codes each route can answer, in the contract\'s shape, with their headers', async (t) => {
  const codes = (responses: ReturnType<typeof errorResponses>) => Object.fromEntries(Object.entries(responses).map(([status, response]) => [status, response.properties.code!.enum as string[]]))
  t.same(errorResponses(undefined, DEV, false), {}, 'a public route that is never shed')
  t.same(codes(errorResponses(undefined, DEV, true)), { 503: ['overloaded'] }, 'a public route that load shedding may refuse')
  t.same(codes(errorResponses(ANY_TOKEN, DEV, false)), {
    401: ['authorization_header_missing', 'invalid_header', 'token_expired', 'invalid_claims', 'invalid_token', 'invalid_dpop_proof'],
    503: ['jwks_unavailable', 'overloaded'],
  })
  t.same(codes(errorResponses(ALL_OF, DEV, false))[403], ['insufficient_scope'], 'scopes: a 403')
  t.notOk(codes(errorResponses(OPTIONAL, DEV, false))[401]!.includes('authorization_header_missing'), 'optional: no header is no error')
  const noDpop = codes(errorResponses(ANY_TOKEN, { ...DEV, dpopMode: 'disabled' }, false))
  t.same(noDpop, { 401: ['authorization_header_missing', 'invalid_header', 'token_expired', 'invalid_claims', 'invalid_token'], 503: ['jwks_unavailable'] },
    'DPoP disabled: no proof errors, and no full replay store')
  t.same(codes(errorResponses(ANY_TOKEN, { ...DEV, dpopMode: 'disabled' }, true))[503], ['jwks_unavailable', 'overloaded'])

  const { 401: unauthorized, 403: forbidden, 503: unavailable } = errorResponses(ALL_OF, DEV, false)
  t.same(unauthorized!.required, ['statusCode', 'error', 'code', 'message'])
  t.match(unauthorized!.properties, { statusCode: { type: 'integer', enum: [401] }, error: { enum: ['Unauthorized'] }, message: { type: 'string' } })
  t.same(Object.keys(unauthorized!.headers), ['WWW-Authenticate'])
  t.same(Object.keys(forbidden!.headers), ['WWW-Authenticate'])
  t.match(forbidden!['x-response-description'], 'Forbidden: `insufficient_scope` (a valid token without the scopes this operation needs)')
  t.same(Object.keys(unavailable!.headers), ['Retry-After'])
  t.match(unavailable!.properties.error, { enum: ['Service Unavailable'] })
})

t.test('the docs page\'s copy of the document leaves out the openIdConnect schemes, which swagger-ui would fetch', async (t) => {
  const document: SecuredDocument = {
    components: { securitySchemes: { bearer: { type: 'http' }, oidc: { type: 'openIdConnect' } } },
    paths: { '/a': { get: { security: [{ bearer: [] }, { oidc: [] }, {}] }, post: {} } },
  }
  const copy = withoutOpenIdConnect(document)
  t.same(copy, { components: { securitySchemes: { bearer: { type: 'http' } } }, paths: { '/a': { get: { security: [{ bearer: [] }, {}] }, post: {} } } })
  t.same(Object.keys(document.components.securitySchemes), ['bearer', 'oidc'], 'the document itself is untouched')
})

t.test('/openapi.json: OpenAPI 3.1 from the route schemas; every route documents the security its config.auth enforces', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer, {}, userRoutes)
  const document = await openapi(t, app)
  t.equal(document.openapi, '3.1.0')
  t.match(document.info, { title: 'API authorization service', version: /^\d+\.\d+\.\d+/ })
  t.notOk(document.servers, 'no servers without PUBLIC_URL: the page calls the origin it came from')
  const schemes = Object.keys(document.components.securitySchemes)
  t.same(schemes, ['bearer', 'dpop', 'oidc'])
  t.equal(document.components.securitySchemes.oidc!.openIdConnectUrl, `${issuer.url}.well-known/openid-configuration`)

  const documented = new Map<string, Operation>()
  for (const [path, item] of Object.entries(document.paths)) {
    for (const [method, operation] of Object.entries(item)) {
      documented.set(`${method.toUpperCase()} ${path}`, operation)
    }
  }
  t.same([...documented.keys()].sort(), [
    'GET /api/audit', 'GET /api/greeting', 'GET /api/me', 'GET /api/private', 'GET /api/private-scoped', 'GET /api/public',
    'GET /api/reports', 'GET /api/teapot', 'GET /api/v2/status', 'GET /health', 'GET /ready', 'POST /api/v2/items/{id}',
  ], 'every route, and none of the docs\' own')

  // Both ways: every protected route is documented with its policy, and every documented security is a policy.
  t.ok(app.authPolicies.has('POST /api/v2/items/:id') && app.authPolicies.has('GET /api/greeting'), 'the user\'s routes are protected too')
  for (const [name, policy] of app.authPolicies) {
    const [method, url] = name.split(' ') as [string, string]
    // HEAD routes are Fastify's copies of GET routes, with the same policy; swagger leaves them out.
    const operation = documented.get(`${method === 'HEAD' ? 'GET' : method} ${openapiPath(url)}`)
    t.same(documentedPolicy(t, operation?.security, schemes), normalized(policy), `${name}: documented as enforced`)
  }
  for (const [name, operation] of documented) {
    const [method, path] = name.split(' ') as [string, string]
    const policy = app.authPolicies.get(`${method} ${path.replace(/\{(\w+)\}/g, ':$1')}`)
    t.equal(operation.security === undefined, policy === undefined, `${name}: security documented exactly when config.auth asks for it`)
    t.match(`${operation.summary} ${operation.description}`, describePolicy(policy), `${name}: says what it needs`)
  }
  const greeting = documented.get('GET /api/greeting')!
  t.equal(greeting.summary, 'A greeting', 'a route\'s own summary stays')
  t.equal(greeting.description, 'Says hello.\n\nAccess token optional: anonymous without an Authorization header, else it must be valid.')
  t.same(greeting.security!.at(-1), {}, 'optional: the empty requirement')
  t.same(documented.get('POST /api/v2/items/{id}')!.security![0], { bearer: ['write:items'] })

  const scoped = documented.get('GET /api/private-scoped')!
  t.same(Object.keys(scoped.responses).sort(), ['200', '401', '403', '503'])
  t.match(scoped.responses['401'], { headers: { 'WWW-Authenticate': { schema: { type: 'string' } } } })
  t.match(scoped.responses['503'], { headers: { 'Retry-After': { schema: { type: 'integer' } } } })
  t.same(Object.keys(documented.get('GET /api/private')!.responses).sort(), ['200', '401', '503'], 'no 403 without scopes')
  t.same(Object.keys(documented.get('GET /api/public')!.responses), ['200'], 'a public route, never shed here')
  t.match(documented.get('GET /api/me')!.responses['200'], { description: 'Default Response' }, 'a route without a response schema keeps its 200')
  t.match(documented.get('GET /ready')!.responses['503'], { content: { 'application/json': { schema: { properties: { issuers: { type: 'array' } } } } } },
    '/ready keeps its own 503')

  // What the document says of errors is what the routes answer.
  const answers = [
    await app.inject('/api/private-scoped'),
    await app.inject({ url: '/api/private-scoped', headers: bearer('not-a-jwt') }),
    await app.inject({ url: '/api/private-scoped', headers: bearer(issuer.token({ scope: 'read:other' })) }),
  ]
  for (const answer of answers) {
    const { schema } = scoped.responses[answer.statusCode]!.content!['application/json']
    const body = answer.json()
    t.same(Object.keys(body).sort(), [...schema.required].sort(), `${answer.statusCode} ${body.code}: the documented fields`)
    t.ok(schema.properties.code.enum.includes(body.code) && schema.properties.error.enum.includes(body.error) && schema.properties.statusCode.enum.includes(body.statusCode),
      `${answer.statusCode} ${body.code}: a documented code`)
    t.ok(answer.headers['www-authenticate'], 'with the documented challenge')
  }
})

t.test('the docs change nothing the API routes do: the same hooks, the same answers, error bodies never cut down', async (t) => {
  const issuer = await startIssuer(t)
  const withDocs = await buildApp(t, issuer, { DOCS: 'true' }, userRoutes)
  const withoutDocs = await buildApp(t, issuer, { DOCS: 'false' }, userRoutes)
  t.equal((await withDocs.inject('/openapi.json')).statusCode, 200)
  // swagger builds its document only when first asked: the answers below come after that.

  const hooksWith = routeHooks(withDocs)
  const hooksWithout = routeHooks(withoutDocs)
  const apiRoutes = [...hooksWithout.keys()].filter((route) => !route.includes('/docs') && !route.includes('/openapi.json'))
  t.ok(apiRoutes.includes('GET /api/private-scoped') && apiRoutes.includes('POST /api/v2/items/:id'))
  for (const route of apiRoutes) {
    t.same(hooksWith.get(route), hooksWithout.get(route), `${route}: no hook added`)
  }
  t.same(hooksWith.get('GET /api/private'), hooksWithout.get('GET /api/private'))
  t.ok(hooksWith.get('GET /api/private')!.some((hook) => hook.includes('authenticateRequest')), 'the parser read the hooks')
  t.notOk(hooksWith.get('GET /api/public')!.length, 'a public route has no hook at all')

  const token = issuer.token({ scope: 'read:messages' })
  const requests = [
    { url: '/api/public' }, { url: '/api/private' }, { url: '/api/private', headers: bearer(token) },
    { url: '/api/private-scoped', headers: bearer(issuer.token()) }, { url: '/api/private-scoped', headers: bearer(token) },
    { url: '/api/private', headers: { authorization: 'Basic x' } }, { url: '/api/teapot', headers: bearer(token) },
    { url: '/api/greeting' }, { url: '/api/v2/items/1', method: 'POST' as const }, { url: '/health' }, { url: '/nowhere' },
  ]
  for (const request of requests) {
    const [a, b] = [await withDocs.inject(request), await withoutDocs.inject(request)]
    t.same([a.statusCode, a.headers['content-type'], a.headers['www-authenticate'], a.body], [b.statusCode, b.headers['content-type'], b.headers['www-authenticate'], b.body],
      `${request.method ?? 'GET'} ${request.url}: the same answer`)
  }
  const teapot = await withDocs.inject({ url: '/api/teapot', headers: bearer(token) })
  t.same(teapot.json(), { statusCode: 403, error: 'Forbidden', code: 'custom', message: 'Not today', detail: 'kept' }, 'an error body keeps every field')
})

t.test('/openapi.json and /docs: on outside production, off in production unless DOCS=true; never protected', async (t) => {
  const issuer = await startIssuer(t)
  const cases: [string, Record<string, string>, number][] = [
    ['dev issuer, DOCS unset', {}, 200],
    ['dev issuer, DOCS=false', { DOCS: 'false' }, 404],
    ['production, DOCS unset', { NODE_ENV: 'production' }, 404],
    ['production, DOCS=true', { NODE_ENV: 'production', DOCS: 'true' }, 200],
    ['production, DOCS=false', { NODE_ENV: 'production', DOCS: 'false' }, 404],
  ]
  for (const [name, env, status] of cases) {
    const app = await buildApp(t, name.startsWith('dev') ? undefined : issuer, env)
    for (const url of ['/openapi.json', '/docs', '/docs/', '/docs/json']) {
      t.equal((await app.inject(url)).statusCode, status, `${name}: ${url}`)
    }
    t.notOk([...app.authPolicies.keys()].some((route) => /docs|openapi/.test(route)), `${name}: not a protected route`)
  }
})

t.test('the docs page: served from this host, a CSP that upgrades nothing, the document without openIdConnect', async (t) => {
  const app = await buildApp(t, undefined)
  const page = await app.inject('/docs')
  t.match(page.headers['content-type'], 'text/html')
  const csp = String(page.headers['content-security-policy'])
  t.match(csp, "default-src 'self'")
  t.match(csp, "connect-src 'self'")
  t.notMatch(csp, 'upgrade-insecure-requests', 'plain HTTP on 127.0.0.1 keeps working')
  t.notMatch(csp, /https:|validator/, 'nothing from elsewhere')
  const assets = [...page.body.matchAll(/(?:src|href)="([^"]+)"/g)].map(([, url]) => url!)
  t.ok(assets.length >= 4 && assets.every((url) => url.startsWith('/docs/static/')), 'every asset from this host')
  for (const asset of assets) {
    t.equal((await app.inject(asset)).statusCode, 200, asset)
  }
  t.equal(page.headers['x-request-id'] === undefined, (await app.inject('/api/public')).headers['x-request-id'] === undefined, 'the page gets what every route gets')

  const full = await openapi(t, app)
  t.match(full.info.description, 'POST /dev/token', 'with the dev issuer, the document says where tokens come from')
  t.match(full.components.securitySchemes, { bearer: { type: 'http' }, dpop: { scheme: 'DPoP' }, oidc: { type: 'openIdConnect' } })
  const forPage = await openapi(t, app, '/docs/json')
  t.same(Object.keys(forPage.components.securitySchemes), ['bearer', 'dpop'])
  t.same(forPage.paths['/api/private-scoped']!.get!.security, [{ bearer: ['read:messages'] }, { dpop: ['read:messages'] }])
  t.same(await openapi(t, app, '/docs/json'), forPage, 'made once')
})

t.test('the document follows the configuration: PUBLIC_URL, DPoP mode, several issuers, load shedding', async (t) => {
  const [first, second] = [await startIssuer(t), await startIssuer(t)]
  const app = await buildApp(t, first, {
    PUBLIC_URL: 'http://localhost:3000/base',
    AUTH0_DPOP: 'required',
    AUTH0_ISSUER_URL: `${first.issuer},${second.issuer}`,
    OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '1000',
  })
  const document = await openapi(t, app)
  t.same(document.servers, [{ url: 'http://localhost:3000/base' }])
  t.ok(document.paths['/api/public'], 'paths are the routes\' own: PUBLIC_URL\'s path is not stripped from them')
  t.same(Object.keys(document.components.securitySchemes), ['dpop', 'oidc', 'oidc2'], 'DPoP required: no bearer scheme')
  t.equal(document.components.securitySchemes.oidc2!.openIdConnectUrl, `${second.url}.well-known/openid-configuration`)
  t.same(document.paths['/api/private']!.get!.security, [{ dpop: [] }, { oidc: [] }, { oidc2: [] }])
  t.same(document.paths['/api/public']!.get!.responses['503']!.content!['application/json'].schema.properties.code.enum, ['overloaded'], 'a shed route says so')
  t.notOk(document.paths['/health']!.get!.responses['503'], 'a probe is never shed')
})
