import { generateKeyPairSync } from 'node:crypto'
import t from 'tap'
import { KeySource } from '../lib/keys/key-source.js'
import { buildApp, bearer, startIssuer } from './helpers/app.js'
import { AUDIENCE } from './helpers/issuer.js'
import { failure, header, keySource, sleep, TIMEOUT_MS } from './helpers/key-source.js'
import { startProxy } from './helpers/proxy.js'

// Issuers as they are deployed: discovery, several issuers at once, and what can go wrong with either.

t.test('discovery: OIDC metadata first, then RFC 8414 with the well-known part before the path', async (t) => {
  const oidc = await startIssuer(t)
  oidc.jwksPath = '/protocol/openid-connect/certs'
  const oauth = await startIssuer(t)
  oauth.path = 'tenant-1'
  oauth.discovery = 'oauth'
  oauth.jwksPath = '/tenant-1/jwks'
  const app = await buildApp(t, oidc, { AUTH0_ISSUER_URL: `${oidc.issuer},${oauth.issuer}` })
  for (const issuer of [oidc, oauth]) {
    t.equal((await app.inject({ url: '/api/private', headers: bearer(issuer.token()) })).statusCode, 200, issuer.discovery)
    t.equal(issuer.discoveryRequests, 1)
    t.equal(issuer.requests, 1)
  }
})

t.test('no metadata at all: 503 jwks_unavailable and /ready says why', async (t) => {
  const issuer = await startIssuer(t)
  issuer.discovery = 'none'
  const app = await buildApp(t, issuer)
  const response = await app.inject({ url: '/api/private', headers: bearer(issuer.token()) })
  t.equal(response.statusCode, 503)
  t.equal(response.json().code, 'jwks_unavailable')
  t.equal(issuer.requests, 0, 'no key set without its location')
  const ready = await app.inject('/ready')
  t.equal(ready.statusCode, 503)
  t.same(ready.json().issuers, [{ issuer: issuer.issuer, state: 'unavailable', keys: 0, reason: 'status 404' }])
})

t.test('metadata that cannot be trusted makes the issuer unusable: logged once, never a 401 or a 500', async (t) => {
  const cases: [Record<string, unknown>, string][] = [
    [{ issuer: 'https://other.example/' }, 'metadata names another issuer'],
    [{ jwks_uri: 'http://keys.example.com/jwks' }, 'jwks_uri is not an https URL'],
    [{ jwks_uri: 'https://user:pass@keys.example.com/jwks' }, 'jwks_uri is not an https URL'],
    [{ jwks_uri: 42 }, 'metadata has no valid jwks_uri'],
    [{ jwks_uri: undefined }, 'metadata has no valid jwks_uri'],
  ]
  for (const [metadata, reason] of cases) {
    const issuer = await startIssuer(t)
    issuer.metadata = metadata
    const logged: object[] = []
    const source = keySource(t, issuer, { fetchTimeoutMs: 50, log: { warn: (details) => logged.push(details) } })
    for (let i = 0; i < 3; i++) {
      t.equal((await failure(source.getKey(header(issuer.keys[0]!.kid)))).code, 'jwks_unavailable', reason)
      await sleep(60) // past the pause: each lookup tries again
    }
    t.ok(issuer.discoveryRequests >= 3, 'retried')
    t.equal(issuer.requests, 0, 'no key set is fetched from an untrusted location')
    t.same(logged, [{ issuer: issuer.issuer, reason }], `${reason}: logged once`)
    t.same(source.status, { issuer: issuer.issuer, state: 'unusable', keys: 0, reason })
  }

  const issuer = await startIssuer(t)
  const production = keySource(t, issuer, { allowLoopbackHttp: false })
  t.equal((await failure(production.getKey(header(issuer.keys[0]!.kid)))).code, 'jwks_unavailable')
  t.match(production.status, { state: 'unusable', reason: 'jwks_uri is not an https URL' }, 'plain http even on loopback, in production')

  const app = await buildApp(t, issuer)
  issuer.metadata = { issuer: 'https://other.example/' }
  const response = await app.inject({ url: '/api/private', headers: bearer(issuer.token()) })
  t.equal(response.statusCode, 503, 'through the app: 503, not 401')
  t.match((await app.inject('/ready')).json(), { code: 'jwks_unavailable', issuers: [{ state: 'unusable', reason: 'metadata names another issuer' }] })
})

t.test('a failing discovery is a 503 within the deadline: hanging, 500, HTML, a redirect not followed', async (t) => {
  const elsewhere = await startIssuer(t)
  for (const [mode, reason] of [['hang', 'TimeoutError'], ['error', 'status 500'], ['html', 'status 502'], ['garbage', 'not JSON'], ['redirect', 'status 302'], ['down', 'UND_ERR_SOCKET']] as const) {
    const issuer = await startIssuer(t)
    issuer.discoveryMode = mode
    issuer.redirectTo = `${elsewhere.url}.well-known/openid-configuration`
    const logged: object[] = []
    const source = keySource(t, issuer, { log: { warn: (details) => logged.push(details) } })
    const started = Date.now()
    t.equal((await failure(source.getKey(header(issuer.keys[0]!.kid)))).code, 'jwks_unavailable', mode)
    t.ok(Date.now() - started < TIMEOUT_MS + 500, `${mode}: within the deadline`)
    t.same(logged, [{ issuer: issuer.issuer, reason }], mode)
  }
  t.equal(elsewhere.discoveryRequests + elsewhere.requests, 0, 'the redirect target received nothing')
})

t.test('stale while failing: metadata down at renewal keeps the keys and the jwks_uri it gave', async (t) => {
  const issuer = await startIssuer(t)
  const logged: object[] = []
  const source = keySource(t, issuer, { keyMaxAgeMs: 200, log: { warn: (details) => logged.push(details) } })
  await source.getKey(header(issuer.keys[0]!.kid))
  issuer.discoveryMode = 'error'
  const next = issuer.rotate()
  await sleep(350)
  t.equal(issuer.discoveryRequests, 2, 'the metadata was asked again at renewal')
  t.equal(issuer.requests, 2, 'and the key set fetched from where it was')
  t.match(await source.getKey(header(next.kid)), /PUBLIC KEY/, 'keys published meanwhile arrive')
  t.match(logged, [{ reason: 'status 500' }])
  t.equal(source.status.state, 'ready')

  issuer.mode = 'error'
  await sleep(250)
  t.match(await source.getKey(header(next.kid)), /PUBLIC KEY/, 'keys in hand are served while both fail')
  t.match(source.status, { state: 'stale', keys: 2, reason: 'status 500' })
})

t.test('several issuers: a token is matched to its issuer by exact iss, and only that issuer\'s keys verify it', async (t) => {
  const custom = await startIssuer(t)
  const canonical = await startIssuer(t)
  const other = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const sharedKid = custom.keys[0]!.kid
  canonical.keys = [{ kid: sharedKid, ...other }] // the same kid, another key
  const app = await buildApp(t, custom, { AUTH0_ISSUER_URL: `${custom.issuer},${canonical.issuer}` })
  t.equal((await app.inject({ url: '/api/private', headers: bearer(custom.token()) })).statusCode, 200)
  t.equal((await app.inject({ url: '/api/private', headers: bearer(canonical.token()) })).statusCode, 200)

  const crossed = [
    custom.token({ iss: canonical.issuer }), // signed with the custom domain's key, naming the canonical one
    canonical.token({ iss: custom.issuer }),
  ]
  for (const token of crossed) {
    const response = await app.inject({ url: '/api/private', headers: bearer(token) })
    t.equal(response.statusCode, 401)
    t.equal(response.json().code, 'invalid_token', 'the named issuer\'s key with the same kid does not verify it')
  }

  const fetches = custom.requests + canonical.requests + custom.discoveryRequests + canonical.discoveryRequests
  for (const iss of ['https://evil.example/', custom.issuer.slice(0, -1), `${custom.issuer}/`, custom.issuer.toUpperCase(), 42]) {
    const response = await app.inject({ url: '/api/private', headers: bearer(custom.token({ iss })) })
    t.equal(response.statusCode, 401, String(iss))
    t.equal(response.json().code, 'invalid_claims', String(iss))
  }
  t.equal(custom.requests + canonical.requests + custom.discoveryRequests + canonical.discoveryRequests, fetches, 'no fetch for an issuer not configured')

  const ready = await app.inject('/ready')
  t.equal(ready.statusCode, 200)
  t.same(ready.json(), { status: 'ready', issuers: [{ issuer: custom.issuer, state: 'ready', keys: 1 }, { issuer: canonical.issuer, state: 'ready', keys: 1 }] })
})

t.test('readiness waits for every issuer; each has its own key set and cooldown', async (t) => {
  const up = await startIssuer(t)
  const down = await startIssuer(t)
  down.mode = 'down'
  const app = await buildApp(t, up, { AUTH0_ISSUER_URL: `${up.issuer},${down.issuer}`, JWKS_TIMEOUT_MS: String(TIMEOUT_MS) })
  while (!app.issuers.get(up.issuer)!.ready) {
    await sleep(10)
  }
  const ready = await app.inject('/ready')
  t.equal(ready.statusCode, 503)
  t.match(ready.json().issuers, [{ issuer: up.issuer, state: 'ready' }, { issuer: down.issuer, state: 'unavailable', reason: 'UND_ERR_SOCKET' }])
  t.equal((await app.inject({ url: '/api/private', headers: bearer(up.token()) })).statusCode, 200, 'one issuer down leaves the other serving')
  t.equal((await app.inject({ url: '/api/private', headers: bearer(down.token()) })).statusCode, 503)
  down.mode = 'up'
  await sleep(TIMEOUT_MS + 200)
  t.equal((await app.inject('/ready')).statusCode, 200, 'ready once both have keys, retried in the background')
})

t.test('token profiles: a typ that is not an access token\'s is refused before any key is looked up', async (t) => {
  const issuer = await startIssuer(t)
  const auth0 = await buildApp(t, issuer)
  const rfc9068 = await buildApp(t, issuer, { AUTH0_TOKEN_PROFILE: 'rfc9068' })
  const full = { client_id: 'client-1', jti: 'id-1' }
  const cases: [unknown, number, number][] = [ // typ, status with auth0, status with rfc9068
    [undefined, 200, 401],
    ['JWT', 200, 401],
    ['jwt', 200, 401],
    ['at+jwt', 200, 200],
    ['AT+JWT', 200, 200],
    ['application/at+jwt', 200, 200],
    ['dpop+jwt', 401, 401],
    ['logout+jwt', 401, 401],
    ['secevent+jwt', 401, 401],
    ['id_token', 401, 401],
    ['JOSE', 401, 401],
    ['', 401, 401],
    [7, 401, 401],
    [['at+jwt'], 401, 401],
  ]
  for (const [typ, auth0Status, rfc9068Status] of cases) {
    const token = issuer.token(full, undefined, { typ })
    for (const [app, status] of [[auth0, auth0Status], [rfc9068, rfc9068Status]] as const) {
      const response = await app.inject({ url: '/api/private', headers: bearer(token) })
      t.equal(response.statusCode, status, `typ ${JSON.stringify(typ)}`)
      if (status === 401) {
        t.same(response.json(), { statusCode: 401, error: 'Unauthorized', code: 'invalid_token', message: 'Token type is not an access token (typ)' })
      }
    }
  }
})

t.test('rfc9068: the claims RFC 9068 requires, with their types', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer, { AUTH0_TOKEN_PROFILE: 'rfc9068' })
  const full = { client_id: 'client-1', jti: 'id-1' }
  const at = (claims: Record<string, unknown>) => issuer.token({ ...full, ...claims }, undefined, { typ: 'at+jwt' })
  t.equal((await app.inject({ url: '/api/private', headers: bearer(at({})) })).statusCode, 200)
  t.equal((await app.inject({ url: '/api/private', headers: bearer(at({ aud: [AUDIENCE, 'other'] })) })).statusCode, 200, 'an audience list')
  for (const claim of ['sub', 'client_id', 'iat', 'jti']) {
    const response = await app.inject({ url: '/api/private', headers: bearer(at({ [claim]: undefined })) })
    t.equal(response.statusCode, 401, `without ${claim}`)
    t.same(response.json(), { statusCode: 401, error: 'Unauthorized', code: 'invalid_claims', message: `Token lacks a claim its profile requires (${claim})` })
  }
  for (const [claim, value] of [['sub', 1], ['client_id', ['c']], ['iat', '1'], ['jti', 5]] as const) {
    const response = await app.inject({ url: '/api/private', headers: bearer(at({ [claim]: value })) })
    t.equal(response.json().code, 'invalid_claims', `${claim} as ${typeof value}`)
  }
  const wrongTypeAud = await app.inject({ url: '/api/private', headers: bearer(at({ aud: [AUDIENCE, 3] })) })
  t.equal(wrongTypeAud.json().code, 'invalid_claims', 'an audience list with a non-string')
})

t.test('claim rules: AUTH0_MAX_TOKEN_AGE, iat in the future, AUTH0_ALLOWED_CLIENTS', async (t) => {
  const issuer = await startIssuer(t)
  const now = Math.floor(Date.now() / 1000)
  const aged = await buildApp(t, issuer, { AUTH0_MAX_TOKEN_AGE: '60', AUTH0_CLOCK_TOLERANCE: '0' })
  const ask = async (app: typeof aged, claims: Record<string, unknown>) => {
    const response = await app.inject({ url: '/api/private', headers: bearer(issuer.token(claims)) })
    return response.statusCode === 200 ? 'ok' : `${response.statusCode} ${response.json().code}: ${response.json().message}`
  }
  t.equal(await ask(aged, { iat: now - 30 }), 'ok')
  t.equal(await ask(aged, { iat: now - 90 }), '401 invalid_claims: Token is older than this API accepts (iat)')
  t.equal(await ask(aged, { iat: undefined }), '401 invalid_claims: Token has no issue time (iat)')
  t.equal(await ask(aged, { iat: 'yesterday' }), '401 invalid_claims: Token has a claim of the wrong type')

  const plain = await buildApp(t, issuer)
  t.equal(await ask(plain, { iat: undefined }), 'ok', 'without a maximum age, iat is optional')
  t.equal(await ask(plain, { iat: now + 3 }), 'ok', 'within the clock tolerance')
  t.equal(await ask(plain, { iat: now + 60 }), '401 invalid_claims: Token is issued in the future (iat)', 'a future iat is always refused')

  const clients = await buildApp(t, issuer, { AUTH0_ALLOWED_CLIENTS: 'app-1, app-2' })
  t.equal(await ask(clients, { azp: 'app-1' }), 'ok')
  t.equal(await ask(clients, { client_id: 'app-2' }), 'ok')
  t.equal(await ask(clients, { azp: 'intruder', client_id: 'app-2' }), 'ok', 'either claim may name an allowed client')
  t.equal(await ask(clients, { azp: 'intruder' }), '401 invalid_claims: Token client is not allowed (azp, client_id)')
  t.equal(await ask(clients, {}), '401 invalid_claims: Token client is not allowed (azp, client_id)', 'neither claim')
  t.equal(await ask(clients, { azp: ['app-1'] }), '401 invalid_claims: Token has a claim of the wrong type')
})

t.test('the outbound proxy: discovery and key fetches go through HTTP_PROXY unless NO_PROXY exempts the host', async (t) => {
  const issuer = await startIssuer(t)
  const proxy = await startProxy()
  t.teardown(() => proxy.close())
  const proxied = await buildApp(t, issuer, { HTTP_PROXY: proxy.url })
  t.equal((await proxied.inject({ url: '/api/private', headers: bearer(issuer.token()) })).statusCode, 200)
  // undici tunnels every request through CONNECT, plain http ones too
  t.ok(proxy.seen.length > 0 && proxy.seen.every((line) => line === `CONNECT ${new URL(issuer.url).host}`), proxy.seen.join(', '))
  const throughProxy = proxy.seen.length

  const direct = await buildApp(t, issuer, { HTTP_PROXY: proxy.url, NO_PROXY: '127.0.0.1' })
  t.equal((await direct.inject({ url: '/api/private', headers: bearer(issuer.token()) })).statusCode, 200)
  t.equal(proxy.seen.length, throughProxy, 'NO_PROXY: straight to the issuer')

  const httpsOnly = await buildApp(t, issuer, { HTTPS_PROXY: proxy.url })
  t.equal((await httpsOnly.inject({ url: '/api/private', headers: bearer(issuer.token()) })).statusCode, 200)
  t.equal(proxy.seen.length, throughProxy, 'HTTPS_PROXY is for https URLs only')

  const broken = await buildApp(t, issuer, { HTTP_PROXY: 'http://127.0.0.1:1' })
  t.equal((await broken.inject({ url: '/api/private', headers: bearer(issuer.token()) })).statusCode, 503, 'a dead proxy is an unreachable issuer')
})

t.test('KeySource without a dispatcher makes and closes its own', async (t) => {
  const issuer = await startIssuer(t)
  const source = new KeySource({ issuer: issuer.issuer, algorithms: ['RS256'], fetchTimeoutMs: 1000, unknownKidCooldownMs: 0, allowLoopbackHttp: true })
  t.match(await source.getKey(header(issuer.keys[0]!.kid)), /PUBLIC KEY/)
  await source.close()
})
