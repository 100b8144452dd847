import { createHmac, randomUUID } from 'node:crypto'
import t from 'tap'
import { signRs256 } from '../lib/tokens/sign.js'
import { buildApp, bearer, startIssuer } from './helpers/app.js'
import { AUDIENCE } from './helpers/issuer.js'

const b64 = (value: object | string): string => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url')

t.test('forged and broken tokens are each a 401, never a 500', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer)
  const [key] = issuer.keys
  const now = Math.floor(Date.now() / 1000)
  const claims = { iss: issuer.url, sub: 'user-1', aud: AUDIENCE, iat: now, exp: now + 600, scope: 'read:messages' }
  const valid = issuer.token(claims)
  const [header, payload, signature] = valid.split('.') as [string, string, string]
  const publicPem = key!.publicKey.export({ format: 'pem', type: 'spki' }).toString()
  const hs256Input = `${b64({ alg: 'HS256', typ: 'JWT', kid: key!.kid })}.${b64(claims)}`
  const stranger = (await startIssuer(t)).keys[0]!

  const attacks: Record<string, { token: string, code: string }> = {
    'alg none': { token: `${b64({ alg: 'none', typ: 'JWT', kid: key!.kid })}.${b64(claims)}.`, code: 'invalid_token' },
    'alg none with a signature': { token: `${b64({ alg: 'none', kid: key!.kid })}.${payload}.${signature}`, code: 'invalid_token' },
    'HS256 signed with the public key': { token: `${hs256Input}.${createHmac('sha256', publicPem).update(hs256Input).digest('base64url')}`, code: 'invalid_token' },
    'another key under the right kid': { token: signRs256({ kid: key!.kid }, claims, stranger.privateKey), code: 'invalid_token' },
    'tampered payload': { token: `${header}.${b64({ ...claims, sub: 'admin' })}.${signature}`, code: 'invalid_token' },
    'tampered header': { token: `${b64({ alg: 'RS512', typ: 'JWT', kid: key!.kid })}.${payload}.${signature}`, code: 'invalid_token' },
    'signature stripped': { token: `${header}.${payload}.`, code: 'invalid_token' },
    'signature of another token': { token: `${header}.${payload}.${issuer.token().split('.')[2]}`, code: 'invalid_token' },
    'two segments': { token: `${header}.${payload}`, code: 'invalid_token' },
    'four segments': { token: `${valid}.${signature}`, code: 'invalid_token' },
    'header not base64': { token: `%%%.${payload}.${signature}`.replace(/%/g, '~'), code: 'invalid_token' },
    'header not JSON': { token: `${b64('not json')}.${payload}.${signature}`, code: 'invalid_token' },
    'payload not JSON': { token: `${header}.${b64('not json')}.${signature}`, code: 'invalid_token' },
    'payload a JSON string': { token: `${header}.${b64('"claims"')}.${signature}`, code: 'invalid_token' },
    'header a JSON array': { token: `${b64([1])}.${payload}.${signature}`, code: 'invalid_token' },
    'empty segments': { token: '..', code: 'invalid_token' },
    'no kid': { token: signRs256({ kid: undefined as unknown as string }, claims, key!.privateKey), code: 'invalid_token' },
    'numeric kid': { token: signRs256({ kid: 7 as unknown as string }, claims, key!.privateKey), code: 'invalid_token' },
    'huge kid': { token: signRs256({ kid: 'k'.repeat(5000) }, claims, key!.privateKey), code: 'invalid_token' },
    'expired': { token: issuer.token({ exp: now - 3600 }), code: 'token_expired' },
    'not valid yet (nbf)': { token: issuer.token({ nbf: now + 3600 }), code: 'invalid_claims' },
    'exp as a string': { token: issuer.token({ exp: String(now + 600) }), code: 'invalid_claims' },
    'wrong iss': { token: issuer.token({ iss: 'https://evil.example/' }), code: 'invalid_claims' },
    'iss without the trailing slash': { token: issuer.token({ iss: issuer.url.slice(0, -1) }), code: 'invalid_claims' },
    'wrong aud': { token: issuer.token({ aud: 'https://api.evil.example' }), code: 'invalid_claims' },
    'aud array without ours': { token: issuer.token({ aud: ['a', 'b'] }), code: 'invalid_claims' },
    'aud of the wrong type': { token: issuer.token({ aud: { value: AUDIENCE } }), code: 'invalid_claims' },
    'missing exp': { token: issuer.token({ exp: undefined }), code: 'invalid_claims' },
    'missing iss': { token: issuer.token({ iss: undefined }), code: 'invalid_claims' },
    'missing aud': { token: issuer.token({ aud: undefined }), code: 'invalid_claims' },
    'sub of the wrong type': { token: issuer.token({ sub: { id: 1 } }), code: 'invalid_claims' },
  }
  for (const [name, attack] of Object.entries(attacks)) {
    for (const url of ['/api/private', '/api/private-scoped']) {
      const response = await app.inject({ url, headers: bearer(attack.token) })
      t.equal(response.statusCode, 401, `${name} on ${url}`)
      t.equal(response.json().code, attack.code, `${name}: ${attack.code}`)
    }
  }
  t.equal((await app.inject({ url: '/api/private-scoped', headers: bearer(valid) })).statusCode, 200, 'the untampered token still passes')
})

t.test('the clock tolerance (5 s by default) forgives small skews and no more', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer)
  const now = Math.floor(Date.now() / 1000)
  const status = async (claims: Record<string, unknown>): Promise<number> => (await app.inject({ url: '/api/private', headers: bearer(issuer.token(claims)) })).statusCode
  t.equal(await status({ exp: now - 2 }), 200, 'expired 2 s ago')
  t.equal(await status({ nbf: now + 2 }), 200, 'valid in 2 s')
  t.equal(await status({ exp: now - 30 }), 401, 'expired 30 s ago')
  t.equal(await status({ nbf: now + 30 }), 401, 'valid in 30 s')
})

t.test('keys are fetched from the configured issuer only, never from the token', async (t) => {
  const issuer = await startIssuer(t)
  const evil = await startIssuer(t)
  const app = await buildApp(t, issuer)
  const evilKey = evil.keys[0]!

  const tokens = {
    'iss pointing at another JWKS server': evil.token({ aud: AUDIENCE }),
    'jku header': signRs256({ kid: evilKey.kid, jku: `${evil.url}.well-known/jwks.json` }, { iss: issuer.url, aud: AUDIENCE, exp: 9e9 }, evilKey.privateKey),
    'x5u header': signRs256({ kid: evilKey.kid, x5u: `${evil.url}cert.pem` }, { iss: issuer.url, aud: AUDIENCE, exp: 9e9 }, evilKey.privateKey),
    'embedded jwk header': signRs256({ kid: evilKey.kid, jwk: { ...evilKey.publicKey.export({ format: 'jwk' }), kid: evilKey.kid } }, { iss: issuer.url, aud: AUDIENCE, exp: 9e9 }, evilKey.privateKey),
    'jku header with our kid': signRs256({ kid: issuer.keys[0]!.kid, jku: `${evil.url}.well-known/jwks.json` }, { iss: issuer.url, aud: AUDIENCE, exp: 9e9 }, evilKey.privateKey),
  }
  for (const [name, token] of Object.entries(tokens)) {
    const response = await app.inject({ url: '/api/private', headers: bearer(token) })
    t.equal(response.statusCode, 401, name)
    t.equal(response.json().code, name.startsWith('iss') ? 'invalid_claims' : 'invalid_token', name)
  }
  t.equal(evil.requests + evil.discoveryRequests, 0, 'the attacker\'s server received no request')
})

t.test('oversized and odd input gets a clear 4xx over real HTTP', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer)
  const base = await app.listen({ port: 0, host: '127.0.0.1' })

  const huge = await fetch(`${base}/api/private`, { headers: bearer(`a.${'b'.repeat(20_000)}.c`) })
  t.equal(huge.status, 431, 'a header past Node\'s limit')

  const big = await fetch(`${base}/api/private`, { headers: bearer(`${randomUUID()}.${'b'.repeat(8000)}.c`) })
  t.equal(big.status, 401)
  t.equal(((await big.json()) as { code: string }).code, 'invalid_token')

  const unknownRoute = await fetch(`${base}/api/nope`)
  t.equal(unknownRoute.status, 404)
  t.equal(((await unknownRoute.json()) as { statusCode: number }).statusCode, 404)

  const wrongMethod = await fetch(`${base}/api/private`, { method: 'DELETE' })
  t.equal(wrongMethod.status, 404)
})
