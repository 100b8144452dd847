import { generateKeyPairSync } from 'node:crypto'
import t from 'tap'
import type { AuthError } from '../lib/errors.js'
import { failure, header, keySource, sleep } from './helpers/key-source.js'
import { startIssuer } from './helpers/app.js'

t.test('the key set is fetched once and then served from memory', async (t) => {
  const issuer = await startIssuer(t)
  const second = issuer.rotate()
  const source = keySource(t, issuer)
  const pems = await Promise.all(Array.from({ length: 20 }, () => source.getKey(header(issuer.keys[1]!.kid))))
  t.match(pems[0], /^-----BEGIN PUBLIC KEY-----/)
  t.equal(new Set(pems).size, 1)
  t.match(await source.getKey(header(second.kid)), /PUBLIC KEY/, 'every key of the set came with the one fetch')
  t.equal(issuer.requests, 1, 'twenty concurrent lookups and another kid, one fetch')
})

t.test('a junk kid does not lock genuine kids out (one fetch brings the whole set)', async (t) => {
  const issuer = await startIssuer(t)
  const source = keySource(t, issuer)
  t.equal((await failure(source.getKey(header('junk')))).message, 'Token signing key is not known')
  t.match(await source.getKey(header(issuer.keys[0]!.kid)), /PUBLIC KEY/)
  t.equal(issuer.requests, 1)
})

t.test('a burst of unknown kids costs at most one fetch per cooldown window', async (t) => {
  const issuer = await startIssuer(t)
  const source = keySource(t, issuer)
  const results = await Promise.allSettled(Array.from({ length: 200 }, (_, i) => source.getKey(header(`forged-${i}`))))
  t.ok(results.every((result) => result.status === 'rejected' && (result.reason as AuthError).code === 'invalid_token'))
  t.equal(issuer.requests, 1, '200 distinct unknown kids, one fetch')
  for (let i = 0; i < 50; i++) {
    await failure(source.getKey(header(`later-${i}`)))
  }
  t.equal(issuer.requests, 1, 'still one fetch within the window')
})

t.test('rotation: a kid published later is fetched once the window is over', async (t) => {
  const issuer = await startIssuer(t)
  const source = keySource(t, issuer, { unknownKidCooldownMs: 1000 })
  await source.getKey(header(issuer.keys[0]!.kid))
  const next = issuer.rotate()
  t.equal((await failure(source.getKey(header(next.kid)))).code, 'invalid_token', 'inside the window the set in hand is trusted')
  t.equal(issuer.requests, 1)
  await sleep(1100)
  t.match(await source.getKey(header(next.kid)), /PUBLIC KEY/, 'after the window it fetches the set: no fetch had confirmed it absent')
  t.equal(issuer.requests, 2)
})

t.test('an unknown kid is remembered, within bounds, and asked about again when its entry expires', async (t) => {
  const issuer = await startIssuer(t)
  const source = keySource(t, issuer, { unknownKidCooldownMs: 0, unknownKidTtlMs: 100 })
  await failure(source.getKey(header('late')))
  t.equal(issuer.requests, 1)
  await failure(source.getKey(header('late')))
  t.equal(issuer.requests, 1, 'the negative cache answers for the same kid')
  await failure(source.getKey(header('other')))
  t.equal(issuer.requests, 2, 'another unknown kid fetches again once the cooldown is over')

  issuer.keys.push({ ...issuer.keys[0]!, kid: 'late' })
  await sleep(120)
  t.match(await source.getKey(header('late')), /PUBLIC KEY/, 'found once the entry expired')
  t.equal(issuer.requests, 3)

  for (let i = 0; i <= 1000; i++) {
    await failure(source.getKey(header(`forged-${i}`)))
  }
  const fetches = issuer.requests
  await failure(source.getKey(header('forged-1000')))
  t.equal(issuer.requests, fetches, 'the newest entry is remembered')
  await failure(source.getKey(header('forged-0')))
  t.equal(issuer.requests, fetches + 1, 'past 1,000 entries the oldest was evicted')
})

t.test('algorithms and kids are checked before any fetch', async (t) => {
  const issuer = await startIssuer(t)
  const source = keySource(t, issuer)
  for (const bad of [{ alg: 'HS256', kid: 'k' }, { alg: 'none', kid: 'k' }, { kid: 'k' }, { alg: 'RS256' }, { alg: 'RS256', kid: '' }, { alg: 'RS256', kid: 'k'.repeat(300) }, { alg: 'RS256', kid: 7 }]) {
    t.equal((await failure(source.getKey(bad))).code, 'invalid_token', JSON.stringify(bad).slice(0, 60))
  }
  t.equal(issuer.requests, 0)
})

t.test('keys that cannot be used are skipped; a key stating its alg serves only that alg', async (t) => {
  const issuer = await startIssuer(t)
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' })
  const rsa = issuer.keys[0]!.publicKey.export({ format: 'jwk' })
  issuer.extraJwks = [
    { ...ec, kid: 'ec', alg: 'ES256' },
    { ...rsa, kid: 'any-rsa-alg' },
    { ...rsa, kid: 'encryption', use: 'enc' },
    { kty: 'oct', k: 'c2VjcmV0', kid: 'symmetric' },
    { kty: 'RSA', n: '!!', e: 'AQAB', kid: 'broken' },
    { ...generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ format: 'jwk' }), kid: 'weak' },
    { kty: 'EC', crv: 'P-256', x: 'AA', y: 'AA', kid: 'off-curve' },
    { ...rsa },
    'not an object',
    null,
  ]
  const source = keySource(t, issuer, { algorithms: ['RS256', 'PS256', 'ES256'] })
  t.match(await source.getKey(header('ec', 'ES256')), /PUBLIC KEY/, 'an EC key')
  t.equal((await failure(source.getKey(header('ec', 'RS256')))).message, 'Token algorithm does not match its key')
  t.equal((await failure(source.getKey(header(issuer.keys[0]!.kid, 'PS256')))).code, 'invalid_token', 'the JWKS says RS256')
  const version = source.version
  issuer.extraJwks = [{ ...rsa, kid: 'any-rsa-alg', alg: 'PS256' }]
  await sleep(50)
  t.equal(issuer.requests, 1, 'keyMaxAgeMs is 10 minutes: no renewal yet')
  t.equal(source.version, version)
  t.match(await source.getKey(header('any-rsa-alg', 'PS256')), /PUBLIC KEY/, 'no alg stated: any allowed one')
  for (const kid of ['encryption', 'symmetric', 'broken', 'weak', 'off-curve']) {
    t.equal((await failure(source.getKey(header(kid)))).message, 'Token signing key is not known', kid)
  }
})

t.test('the set is renewed in the background; a withdrawn key stops working', async (t) => {
  const issuer = await startIssuer(t)
  const source = keySource(t, issuer, { keyMaxAgeMs: 200 })
  const old = issuer.keys[0]!
  await source.getKey(header(old.kid))
  const version = source.version
  await sleep(300)
  t.equal(issuer.requests, 2, 'renewed once old, with no request needed')
  t.equal(source.version, version, 'nothing was withdrawn')
  const next = issuer.rotate({ replace: true })
  t.match(await source.getKey(header(old.kid)), /PUBLIC KEY/, 'served until the next renewal')
  await sleep(250)
  t.equal((await failure(source.getKey(header(old.kid)))).code, 'invalid_token', 'the withdrawn key is gone')
  t.ok(source.version > version, 'the version says so')
  t.match(await source.getKey(header(next.kid)), /PUBLIC KEY/)
})

t.test('an issuer with a path: its metadata is under <issuer>/.well-known, its keys where the metadata says', async (t) => {
  const issuer = await startIssuer(t)
  issuer.path = 'realms/main'
  issuer.jwksPath = '/realms/main/protocol/openid-connect/certs'
  const source = keySource(t, issuer)
  t.match(await source.getKey(header(issuer.keys[0]!.kid)), /PUBLIC KEY/)
  t.equal(issuer.discoveryRequests, 1)
})

t.test('a kid published while a fetch was under way is not remembered as unknown', async (t) => {
  const issuer = await startIssuer(t)
  issuer.mode = 'slow'
  issuer.delayMs = 200
  const source = keySource(t, issuer, { unknownKidCooldownMs: 300, fetchTimeoutMs: 5000 })
  const junk = failure(source.getKey(header('junk'))) // starts a fetch of the set as it is now
  while (issuer.requests === 0) {
    await sleep(5) // until the issuer has the request, and has taken the set as it is now
  }
  const published = issuer.rotate()
  t.equal((await failure(source.getKey(header(published.kid)))).message, 'Token signing key is not known', 'the fetch it waited for predates it')
  await junk
  await sleep(350)
  t.match(await source.getKey(header(published.kid)), /PUBLIC KEY/, 'found by the next fetch, one window later')
  t.equal(issuer.requests, 2)
})

t.test('a key that changes its alg changes the version', async (t) => {
  const issuer = await startIssuer(t)
  const rsa = issuer.keys[0]!.publicKey.export({ format: 'jwk' })
  issuer.extraJwks = [{ ...rsa, kid: 'flexible' }]
  const source = keySource(t, issuer, { keyMaxAgeMs: 200, algorithms: ['RS256', 'PS256'] })
  await source.getKey(header('flexible', 'PS256'))
  const version = source.version
  issuer.extraJwks = [{ ...rsa, kid: 'flexible', alg: 'RS256' }]
  t.match(await source.getKey(header('flexible', 'PS256')), /PUBLIC KEY/, 'still served from the set in hand')
  await sleep(300) // the renewal
  t.ok(source.version > version, 'the same key material under a new alg is a changed key')
  t.equal((await failure(source.getKey(header('flexible', 'PS256')))).message, 'Token algorithm does not match its key')
})
