import { generateKeyPairSync } from 'node:crypto'
import { request as httpRequest } from 'node:http'
import t from 'tap'
import { accessTokenHash, DpopKey } from '../lib/dpop/client.js'
import { DPOP_ALGORITHMS, ProofChecker } from '../lib/dpop/proof.js'
import { ReplayStore } from '../lib/dpop/replay-store.js'
import { jwkThumbprint } from '../lib/dpop/thumbprint.js'
import { buildApp, bearer, startIssuer } from './helpers/app.js'

// RFC 9449 at a resource server: DPoP-bound tokens, a proof checked on every request, replays refused.

const HTU = 'http://localhost:80/api/private' // what app.inject's requests are, as the proof must name them
const ALGS = DPOP_ALGORITHMS.join(' ')

/** A DPoP request for `token`, with a fresh proof of `key` unless `proof` is given. */
function dpop (token: string, key: DpopKey, proof = key.proof({ htm: 'GET', htu: HTU, ath: accessTokenHash(token) })): Record<string, string> {
  return { authorization: `DPoP ${token}`, dpop: proof }
}

async function setup (t: Parameters<typeof buildApp>[0], env: Record<string, string> = {}) {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer, env)
  const key = DpopKey.generate('ES256')
  const token = issuer.token({ cnf: { jkt: key.jkt }, scope: 'read:messages' })
  return { issuer, app, key, token }
}

t.test('a DPoP-bound token with a fresh proof per request; the token is verified once, every proof is checked', async (t) => {
  const { issuer, app, key, token } = await setup(t)
  for (let i = 0; i < 3; i++) {
    t.equal((await app.inject({ url: '/api/private', headers: dpop(token, key) })).statusCode, 200, `request ${i + 1}`)
  }
  t.equal(issuer.requests, 1)
  const replayed = dpop(token, key)
  t.equal((await app.inject({ url: '/api/private', headers: replayed })).statusCode, 200)
  const again = await app.inject({ url: '/api/private', headers: replayed })
  t.equal(again.statusCode, 401, 'a remembered token still needs a proof never seen before')
  t.same(again.json(), { statusCode: 401, error: 'Unauthorized', code: 'invalid_dpop_proof', message: 'DPoP proof has been used before' })
  t.equal(again.headers['www-authenticate'], `DPoP error="invalid_dpop_proof", error_description="DPoP proof has been used before", algs="${ALGS}"`)
})

t.test('every allowed algorithm, with a real key of its own', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer)
  for (const alg of DPOP_ALGORITHMS) {
    const key = DpopKey.generate(alg)
    const token = issuer.token({ cnf: { jkt: key.jkt } })
    t.equal((await app.inject({ url: '/api/private', headers: dpop(token, key) })).statusCode, 200, alg)
  }
  const only = await buildApp(t, issuer, { AUTH0_DPOP_ALGORITHMS: 'ES256' })
  const eddsa = DpopKey.generate('EdDSA')
  const refused = await only.inject({ url: '/api/private', headers: dpop(issuer.token({ cnf: { jkt: eddsa.jkt } }), eddsa) })
  t.equal(refused.json().message, 'DPoP proof algorithm is not allowed', 'an algorithm left off AUTH0_DPOP_ALGORITHMS')
  t.equal(refused.headers['www-authenticate'], 'DPoP error="invalid_dpop_proof", error_description="DPoP proof algorithm is not allowed", algs="ES256"')
})

t.test('each check of a proof, made to fail', async (t) => {
  const { app, key, token } = await setup(t)
  const ath = accessTokenHash(token)
  const now = Math.floor(Date.now() / 1000)
  const other = DpopKey.generate('ES256')
  const rsa = DpopKey.generate('RS256')
  const weak = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ format: 'jwk' })
  const cases: [string, string | undefined, string][] = [
    ['no proof', undefined, 'DPoP proof is missing'],
    ['not a JWT', 'not-a-jwt', 'DPoP proof must be one compact JWT'],
    ['too long', `${'a'.repeat(9000)}.b.c`, 'DPoP proof must be one compact JWT'],
    ['payload not JSON', `${key.proof({ htm: 'GET', htu: HTU, ath }).split('.')[0]}.bm90IGpzb24.c2ln`, 'DPoP proof must be one compact JWT'],
    ['wrong htm', key.proof({ htm: 'POST', htu: HTU, ath }), 'DPoP proof htm does not match the request method'],
    ['htm in lower case', key.proof({ htm: 'get', htu: HTU, ath }), 'DPoP proof htm does not match the request method'],
    ['htu with a query', key.proof({ htm: 'GET', htu: `${HTU}?x=1`, ath }), 'DPoP proof htu does not match the request URL'],
    ['htu with a fragment', key.proof({ htm: 'GET', htu: `${HTU}#x`, ath }), 'DPoP proof htu does not match the request URL'],
    ['htu of another host', key.proof({ htm: 'GET', htu: 'http://evil.example/api/private', ath }), 'DPoP proof htu does not match the request URL'],
    ['htu of another path', key.proof({ htm: 'GET', htu: 'http://localhost/api/private-scoped', ath }), 'DPoP proof htu does not match the request URL'],
    ['htu of another scheme', key.proof({ htm: 'GET', htu: 'https://localhost/api/private', ath }), 'DPoP proof htu does not match the request URL'],
    ['htu not a URL', key.proof({ htm: 'GET', htu: 'nothing', ath }), 'DPoP proof htu does not match the request URL'],
    ['htu missing', key.proof({ htm: 'GET', htu: undefined as unknown as string, ath }), 'DPoP proof htu does not match the request URL'],
    ['iat stale', key.proof({ htm: 'GET', htu: HTU, ath, iat: now - 61 }), 'DPoP proof iat is outside the accepted window'],
    ['iat in the future', key.proof({ htm: 'GET', htu: HTU, ath, iat: now + 30 }), 'DPoP proof iat is outside the accepted window'],
    ['iat a string', key.proof({ htm: 'GET', htu: HTU, ath, iat: String(now) as unknown as number }), 'DPoP proof iat is outside the accepted window'],
    ['wrong ath', key.proof({ htm: 'GET', htu: HTU, ath: accessTokenHash('another token') }), 'DPoP proof ath does not match the access token'],
    ['no ath', key.proof({ htm: 'GET', htu: HTU }), 'DPoP proof ath does not match the access token'],
    ['no jti', key.proof({ htm: 'GET', htu: HTU, ath, jti: undefined as unknown as string }), 'DPoP proof jti is missing or too long'],
    ['empty jti', key.proof({ htm: 'GET', htu: HTU, ath, jti: '' }), 'DPoP proof jti is missing or too long'],
    ['jti too long', key.proof({ htm: 'GET', htu: HTU, ath, jti: 'j'.repeat(257) }), 'DPoP proof jti is missing or too long'],
    ['another key than the token is bound to', other.proof({ htm: 'GET', htu: HTU, ath }), 'DPoP proof key is not the one the token is bound to'],
    ['a private key in jwk', key.proof({ htm: 'GET', htu: HTU, ath }, { jwk: key.privateKey.export({ format: 'jwk' }) }), 'DPoP proof jwk must be a public key of its algorithm'],
    ['alg none', key.proof({ htm: 'GET', htu: HTU, ath }, { alg: 'none' }), 'DPoP proof algorithm is not allowed'],
    ['alg HS256', key.proof({ htm: 'GET', htu: HTU, ath }, { alg: 'HS256' }), 'DPoP proof algorithm is not allowed'],
    ['typ JWT', key.proof({ htm: 'GET', htu: HTU, ath }, { typ: 'JWT' }), 'DPoP proof typ must be dpop+jwt'],
    ['no typ', key.proof({ htm: 'GET', htu: HTU, ath }, { typ: undefined }), 'DPoP proof typ must be dpop+jwt'],
    ['no jwk', key.proof({ htm: 'GET', htu: HTU, ath }, { jwk: undefined }), 'DPoP proof jwk must be a public key of its algorithm'],
    ['an RSA key under ES256', key.proof({ htm: 'GET', htu: HTU, ath }, { jwk: rsa.jwk }), 'DPoP proof jwk must be a public key of its algorithm'],
    ['a P-384 key under ES256', key.proof({ htm: 'GET', htu: HTU, ath }, { jwk: DpopKey.generate('ES384').jwk }), 'DPoP proof jwk must be a public key of its algorithm'],
    ['a 1024-bit RSA key', rsa.proof({ htm: 'GET', htu: HTU, ath }, { jwk: weak }), 'DPoP proof jwk must be a public key of its algorithm'],
    ['a malformed key', key.proof({ htm: 'GET', htu: HTU, ath }, { jwk: { ...key.jwk, x: 'AA' } }), 'DPoP proof jwk must be a public key of its algorithm'],
    ['a symmetric key', key.proof({ htm: 'GET', htu: HTU, ath }, { jwk: { kty: 'oct', k: 'c2VjcmV0' } }), 'DPoP proof jwk must be a public key of its algorithm'],
    ['a header that is no object', `${Buffer.from('"text"').toString('base64url')}.e30.c2ln`, 'DPoP proof typ must be dpop+jwt'],
    ['the signature of another proof', `${key.proof({ htm: 'GET', htu: HTU, ath }).split('.').slice(0, 2).join('.')}.${key.proof({ htm: 'GET', htu: HTU, ath }).split('.')[2]}`, 'DPoP proof signature is invalid'],
  ]
  for (const [name, proof, message] of cases) {
    const response = await app.inject({ url: '/api/private', headers: { authorization: `DPoP ${token}`, ...(proof !== undefined && { dpop: proof }) } })
    t.equal(response.statusCode, 401, name)
    t.same(response.json(), { statusCode: 401, error: 'Unauthorized', code: 'invalid_dpop_proof', message }, name)
    t.equal(response.headers['www-authenticate'], `DPoP error="invalid_dpop_proof", error_description="${message}", algs="${ALGS}"`, name)
  }
  t.equal((await app.inject({ url: '/api/private', headers: dpop(token, key) })).statusCode, 200, 'and a good proof still passes')
})

t.test('htu is normalised as RFC 3986 compares URLs', async (t) => {
  const { app, key, token } = await setup(t)
  const ath = accessTokenHash(token)
  for (const htu of ['HTTP://LOCALHOST/api/private', 'http://localhost:80/api/private', 'http://localhost/api/./private', 'http://localhost/api/%70rivate', 'http://localhost/api/x/../private']) {
    const response = await app.inject({ url: '/api/private', headers: dpop(token, key, key.proof({ htm: 'GET', htu, ath })) })
    t.equal(response.statusCode, 200, htu)
  }
  t.equal((await app.inject({ url: '/api/private?page=2', headers: dpop(token, key) })).statusCode, 200, 'the request\'s query is not part of htu')
  const checker = new ProofChecker({ algorithms: ['ES256'], maxAgeSec: 60, clockToleranceSec: 5, replays: new ReplayStore(1000, 1000) })
  t.equal(checker.normalizeUrl('http://a.example/%7e%2f%2F'), 'http://a.example/~%2F%2F', 'unreserved escapes decoded, the others in upper case')
})

t.test('the answers: bound as Bearer, a Bearer with a proof, an unbound token as DPoP, no credentials, 403', async (t) => {
  const { issuer, app, key, token } = await setup(t)
  const plain = issuer.token({ scope: 'read:messages' })
  const answer = async (headers: Record<string, string>, url = '/api/private') => {
    const response = await app.inject({ url, headers })
    return `${response.statusCode} ${response.json().code}: ${response.headers['www-authenticate']}`
  }
  t.equal(await answer(bearer(token)), '401 invalid_token: Bearer realm="api", error="invalid_token", error_description="Token is DPoP-bound: send it as Authorization: DPoP with a DPoP proof"', 'RFC 9449 §7.2')
  t.equal(await answer(bearer(token)), '401 invalid_token: Bearer realm="api", error="invalid_token", error_description="Token is DPoP-bound: send it as Authorization: DPoP with a DPoP proof"', 'remembered, the same answer')
  t.equal(await answer({ ...bearer(plain), dpop: key.proof({ htm: 'GET', htu: HTU }) }), '401 invalid_header: Bearer realm="api", error="invalid_request", error_description="A Bearer token must not come with a DPoP proof: send a DPoP-bound token as Authorization: DPoP"')
  t.equal(await answer(dpop(plain, key)), '401 invalid_token: DPoP error="invalid_token", error_description="Token is not DPoP-bound: send it as Authorization: Bearer", algs="' + ALGS + '"')
  t.equal(await answer({}), `401 authorization_header_missing: Bearer realm="api", DPoP algs="${ALGS}"`, 'every accepted scheme, in one header')
  const unscoped = issuer.token({ cnf: { jkt: key.jkt } })
  t.equal(await answer(dpop(unscoped, key, key.proof({ htm: 'GET', htu: 'http://localhost/api/private-scoped', ath: accessTokenHash(unscoped) })), '/api/private-scoped'),
    `403 insufficient_scope: DPoP error="insufficient_scope", error_description="Token does not grant the scope this route requires", algs="${ALGS}", scope="read:messages"`)
  t.equal(await answer(bearer(plain)), '200 undefined: undefined', 'a plain bearer token still works in the default mode')
  for (const cnf of [{ jkt: 42 }, 'jkt', null]) {
    t.match(await answer(bearer(issuer.token({ cnf }))), /^401 invalid_claims/, `cnf ${JSON.stringify(cnf)}`)
  }
  t.match(await answer(bearer(issuer.token({ cnf: { 'x5t#S256': 'abc' } }))), /^200/, 'another confirmation method is not DPoP')
})

t.test('modes: required refuses Bearer with the DPoP challenge only; disabled refuses DPoP and ignores cnf', async (t) => {
  const { issuer, key, token } = await setup(t)
  const plain = issuer.token()
  const required = await buildApp(t, issuer, { AUTH0_DPOP: 'required', AUTH0_DPOP_ALGORITHMS: 'ES256,EdDSA' })
  const refused = await required.inject({ url: '/api/private', headers: bearer(plain) })
  t.equal(refused.statusCode, 401)
  t.equal(refused.json().code, 'invalid_header')
  t.equal(refused.headers['www-authenticate'], 'DPoP error="invalid_request", error_description="This API accepts DPoP-bound tokens only: Authorization: DPoP followed by one token, with a DPoP proof", algs="ES256 EdDSA"')
  t.equal((await required.inject('/api/private')).headers['www-authenticate'], 'DPoP algs="ES256 EdDSA"')
  t.equal((await required.inject({ url: '/api/private', headers: dpop(token, key) })).statusCode, 200)

  const disabled = await buildApp(t, issuer, { AUTH0_DPOP: 'disabled' })
  const dpopScheme = await disabled.inject({ url: '/api/private', headers: dpop(token, key) })
  t.equal(dpopScheme.json().code, 'invalid_header')
  t.equal(dpopScheme.headers['www-authenticate'], 'Bearer realm="api", error="invalid_request", error_description="Authorization header must be Bearer followed by one token"')
  t.equal((await disabled.inject({ url: '/api/private', headers: bearer(token) })).statusCode, 200, 'cnf is ignored: a bound token is a bearer token')
  t.equal((await disabled.inject({ url: '/api/private', headers: { ...bearer(plain), dpop: 'anything' } })).statusCode, 200, 'and a DPoP header means nothing')
  t.equal((await disabled.inject('/api/private')).headers['www-authenticate'], 'Bearer realm="api"')
})

t.test('behind a proxy: htu is PUBLIC_URL plus the path; X-Forwarded-* only from peers TRUST_PROXY names', async (t) => {
  const { issuer, key, token } = await setup(t)
  const ath = accessTokenHash(token)
  const forwarded = { 'x-forwarded-proto': 'https', 'x-forwarded-host': 'api.example.com' }
  const published = await buildApp(t, issuer, { PUBLIC_URL: 'https://api.example.com/v1' })
  t.equal((await published.inject({ url: '/api/private', headers: dpop(token, key, key.proof({ htm: 'GET', htu: 'https://api.example.com/v1/api/private', ath })) })).statusCode, 200)
  t.equal((await published.inject({ url: '/api/private', headers: dpop(token, key) })).statusCode, 401, 'the address the service sees is not the public one')

  const untrusting = await buildApp(t, issuer)
  const proofForPublicHost = () => key.proof({ htm: 'GET', htu: 'https://api.example.com/api/private', ath })
  t.equal((await untrusting.inject({ url: '/api/private', headers: { ...dpop(token, key, proofForPublicHost()), ...forwarded } })).statusCode, 401, 'X-Forwarded-* is not believed by default')
  const trusting = await buildApp(t, issuer, { TRUST_PROXY: '127.0.0.1' })
  t.equal((await trusting.inject({ url: '/api/private', headers: { ...dpop(token, key, proofForPublicHost()), ...forwarded } })).statusCode, 200, 'from a trusted proxy it is')
})

t.test('over real HTTP: a replay is refused on the same keep-alive connection and on a new one; two DPoP headers are refused', async (t) => {
  const { app, key, token } = await setup(t)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const htu = `http://127.0.0.1:${port}/api/private`
  const proof = key.proof({ htm: 'GET', htu, ath: accessTokenHash(token) })
  const send = (headers: Record<string, string | string[]>, agent?: boolean) => new Promise<number>((resolve, reject) => {
    httpRequest({ host: '127.0.0.1', port, path: '/api/private', headers, ...(agent === false && { agent: false }) }, (response) => {
      response.resume()
      resolve(response.statusCode!)
    }).on('error', reject).end()
  })
  const keepAlive = new (await import('node:http')).Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => keepAlive.destroy())
  const sendKeepAlive = (headers: Record<string, string>) => new Promise<number>((resolve, reject) => {
    httpRequest({ host: '127.0.0.1', port, path: '/api/private', headers, agent: keepAlive }, (response) => {
      response.resume()
      resolve(response.statusCode!)
    }).on('error', reject).end()
  })
  t.equal(await sendKeepAlive({ authorization: `DPoP ${token}`, dpop: proof }), 200)
  t.equal(await sendKeepAlive({ authorization: `DPoP ${token}`, dpop: proof }), 401, 'replayed on the same connection')
  t.equal(await send({ authorization: `DPoP ${token}`, dpop: proof }, false), 401, 'replayed on a new connection')
  const fresh = () => key.proof({ htm: 'GET', htu, ath: accessTokenHash(token) })
  t.equal(await send({ authorization: `DPoP ${token}`, dpop: [fresh(), fresh()] }, false), 401, 'two DPoP headers')
  t.equal(await send({ authorization: `DPoP ${token}`, dpop: fresh() }, false), 200)
})

t.test('the dev issuer mints DPoP-bound tokens from a proof, or for a jkt', async (t) => {
  const app = await buildApp(t, undefined)
  const key = DpopKey.generate('ES256')
  const minted = await app.inject({ method: 'POST', url: '/dev/token', headers: { dpop: key.proof({ htm: 'POST', htu: 'http://localhost/dev/token' }) } })
  t.equal(minted.statusCode, 200)
  const { access_token: token, token_type: type } = minted.json()
  t.equal(type, 'DPoP')
  t.same(JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).cnf, { jkt: key.jkt })
  t.equal((await app.inject({ url: '/api/private', headers: dpop(token, key) })).statusCode, 200)

  const forJkt = await app.inject({ method: 'POST', url: '/dev/token', payload: { jkt: key.jkt } })
  t.equal(forJkt.json().token_type, 'DPoP')
  const both = await app.inject({ method: 'POST', url: '/dev/token', payload: { jkt: key.jkt }, headers: { dpop: key.proof({ htm: 'POST', htu: 'http://localhost/dev/token' }) } })
  t.equal(both.statusCode, 400)
  t.equal(both.json().message, 'Send a DPoP proof or a jkt, not both')
  const badProof = await app.inject({ method: 'POST', url: '/dev/token', headers: { dpop: key.proof({ htm: 'GET', htu: 'http://localhost/dev/token' }) } })
  t.equal(badProof.json().code, 'invalid_dpop_proof')
  t.equal((await app.inject({ method: 'POST', url: '/dev/token', payload: { jkt: 'short' } })).statusCode, 400)
})

t.test('the replay store: bounded, and it fails closed when full', async (t) => {
  const store = new ReplayStore(2, 1000)
  t.equal(store.remember('k', 'a', 0), 'fresh')
  t.equal(store.remember('k', 'a', 500), 'replayed')
  t.equal(store.remember('other-key', 'a', 500), 'fresh', 'a jti is scoped to its key')
  t.equal(store.remember('k', 'b', 600), 'full', 'no room while every entry may still be replayed')
  t.equal(store.remember('k', 'b', 1000), 'fresh', 'room once the oldest entries expire')
  t.equal(store.size, 2)
  t.equal(store.remember('k', 'a', 1500), 'fresh', 'an expired entry is forgotten: its proof could not pass the iat check anyway')

  const key = DpopKey.generate('ES256')
  const checker = new ProofChecker({ algorithms: ['ES256'], maxAgeSec: 60, clockToleranceSec: 5, replays: new ReplayStore(1, 65_000), cacheSize: 1 })
  const expected = { method: 'GET', url: HTU }
  t.equal(checker.check(key.proof({ htm: 'GET', htu: HTU }), expected, Date.now()), key.jkt)
  t.throws(() => checker.check(key.proof({ htm: 'GET', htu: HTU }), expected, Date.now()), { code: 'overloaded', statusCode: 503, headers: { 'retry-after': '5' } })
  const other = DpopKey.generate('ES256')
  t.throws(() => checker.check(other.proof({ htm: 'GET', htu: 'http://localhost/other' }), expected, Date.now()), { message: 'DPoP proof htu does not match the request URL' }, 'past its cache size the checker forgets old headers and URLs, and still checks')
  t.throws(() => checker.check(key.proof({ htm: 'GET', htu: HTU }), expected, Date.now()), { code: 'overloaded' })
})

t.test('RFC 7638 thumbprints', async (t) => {
  const rfcExample = {
    kty: 'RSA',
    n: '0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw',
    e: 'AQAB',
    alg: 'RS256',
    kid: '2011-04-29',
  }
  t.equal(jwkThumbprint(rfcExample), 'NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs', 'the example of RFC 7638 §3.1')
  t.equal(jwkThumbprint({ kty: 'oct', k: 'c2VjcmV0' }), undefined)
  t.equal(jwkThumbprint({ kty: 'EC', crv: 'P-256', x: 'AA' }), undefined, 'a member missing')
  t.equal(DpopKey.generate('EdDSA').jkt.length, 43)
})
