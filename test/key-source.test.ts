import t, { type Test } from 'tap'
import { AuthError } from '../lib/errors.js'
import { KeySource, type KeySourceOptions } from '../lib/key-source.js'
import { buildApp, bearer, startIssuer } from './helpers/app.js'
import type { TestIssuer } from './helpers/issuer.js'

const TIMEOUT_MS = 400

function keySource (t: Test, issuer: TestIssuer, options: Partial<KeySourceOptions> = {}): KeySource {
  const source = new KeySource({ issuer: issuer.url, algorithms: ['RS256'], fetchTimeoutMs: TIMEOUT_MS, unknownKidCooldownMs: 30_000, ...options })
  t.teardown(() => source.close())
  return source
}

const header = (kid: string, alg = 'RS256') => ({ alg, kid })

/** The AuthError a lookup failed with; anything else fails the test. */
async function failure (promise: Promise<unknown>): Promise<AuthError> {
  const error = await promise.then(() => undefined, (error: unknown) => error)
  if (!(error instanceof AuthError)) {
    throw new Error(`expected an AuthError, got ${String(error)}`)
  }
  return error
}

t.test('a known kid is fetched once and then served from memory', async (t) => {
  const issuer = await startIssuer(t)
  const source = keySource(t, issuer)
  const kid = issuer.keys[0]!.kid
  const pems = await Promise.all(Array.from({ length: 20 }, () => source.getKey(header(kid))))
  t.match(pems[0], /^-----BEGIN PUBLIC KEY-----/)
  t.equal(new Set(pems).size, 1)
  t.equal(issuer.requests, 1, 'twenty concurrent lookups, one fetch')
  await source.getKey(header(kid))
  t.equal(issuer.requests, 1)
})

t.test('rotation: a new kid is fetched and accepted', async (t) => {
  const issuer = await startIssuer(t)
  const source = keySource(t, issuer)
  await source.getKey(header(issuer.keys[0]!.kid))
  const next = issuer.rotate()
  t.match(await source.getKey(header(next.kid)), /PUBLIC KEY/)
  t.equal(issuer.requests, 2)
})

t.test('a burst of unknown kids costs at most one fetch per cooldown window', async (t) => {
  const issuer = await startIssuer(t)
  const source = keySource(t, issuer, { unknownKidCooldownMs: 60_000 })
  const results = await Promise.allSettled(Array.from({ length: 200 }, (_, i) => source.getKey(header(`forged-${i}`))))
  t.ok(results.every((result) => result.status === 'rejected' && (result.reason as AuthError).code === 'invalid_token'))
  t.equal(issuer.requests, 1, '200 distinct unknown kids, one fetch')
  for (let i = 0; i < 50; i++) {
    await failure(source.getKey(header(`later-${i}`)))
  }
  t.equal(issuer.requests, 1, 'still one fetch within the window')
})

t.test('an unknown kid is remembered after the cooldown; a new one is fetched again', async (t) => {
  const issuer = await startIssuer(t)
  const source = keySource(t, issuer, { unknownKidCooldownMs: 0 })
  t.equal((await failure(source.getKey(header('forged')))).message, 'Token signing key is not known')
  t.equal(issuer.requests, 1)
  await failure(source.getKey(header('forged')))
  t.equal(issuer.requests, 1, 'the negative cache answers for the same kid')
  await failure(source.getKey(header('forged-2')))
  t.equal(issuer.requests, 2, 'the cooldown is over: another kid is fetched')
})

t.test('an unknown kid is asked about again once its negative entry expires', async (t) => {
  const issuer = await startIssuer(t)
  const source = keySource(t, issuer, { unknownKidCooldownMs: 0, unknownKidTtlMs: 50 })
  const late = { kid: 'published-late', privateKey: issuer.keys[0]!.privateKey, publicKey: issuer.keys[0]!.publicKey }
  await failure(source.getKey(header(late.kid)))
  issuer.keys.push(late)
  await failure(source.getKey(header(late.kid)))
  t.equal(issuer.requests, 1, 'remembered as unknown')
  await new Promise((resolve) => setTimeout(resolve, 60))
  t.match(await source.getKey(header(late.kid)), /PUBLIC KEY/, 'found once the entry expired')
  t.equal(issuer.requests, 2)
})

t.test('the negative cache is bounded', async (t) => {
  const issuer = await startIssuer(t)
  const source = keySource(t, issuer, { unknownKidCooldownMs: 0 })
  for (let i = 0; i <= 1000; i++) {
    await failure(source.getKey(header(`forged-${i}`)))
  }
  t.equal(issuer.requests, 1001)
  await failure(source.getKey(header('forged-0')))
  t.equal(issuer.requests, 1002, 'the oldest entry was evicted')
  await failure(source.getKey(header('forged-1000')))
  t.equal(issuer.requests, 1002, 'the newest is still remembered')
})

t.test('algorithms and kids are checked before any fetch', async (t) => {
  const issuer = await startIssuer(t)
  const source = keySource(t, issuer)
  for (const bad of [{ alg: 'HS256', kid: 'k' }, { alg: 'none', kid: 'k' }, { kid: 'k' }, { alg: 'RS256' }, { alg: 'RS256', kid: '' }, { alg: 'RS256', kid: 'k'.repeat(300) }, { alg: 'RS256', kid: 7 }]) {
    t.equal((await failure(source.getKey(bad))).code, 'invalid_token', JSON.stringify(bad).slice(0, 60))
  }
  t.equal(issuer.requests, 0)
})

t.test('issuer down: known keys are still served, unknown kids get 503 at once', async (t) => {
  const issuer = await startIssuer(t)
  const source = keySource(t, issuer, { keyMaxAgeMs: 0 })
  const kid = issuer.keys[0]!.kid
  await source.getKey(header(kid))
  for (const mode of ['down', 'hang', 'html', 'error', 'empty'] as const) {
    issuer.mode = mode
    const started = Date.now()
    t.match(await source.getKey(header(kid)), /PUBLIC KEY/, `${mode}: the known key is served without waiting`)
    t.ok(Date.now() - started < TIMEOUT_MS, `${mode}: no wait for the failing issuer`)
    await new Promise((resolve) => setTimeout(resolve, TIMEOUT_MS + 100)) // the background revalidation fails
    const error = await failure(source.getKey(header('new-kid')))
    t.equal(error.code, 'jwks_unavailable', `${mode}: an unknown kid is a 503`)
    t.equal(error.statusCode, 503)
    t.match(error.headers['retry-after'], /^[1-9]\d*$/)
    t.match(await source.getKey(header(kid)), /PUBLIC KEY/, `${mode}: the known key survives the failed revalidation`)
    t.ok(source.ready, `${mode}: still ready, a key is known`)
    issuer.mode = 'up'
    await new Promise((resolve) => setTimeout(resolve, TIMEOUT_MS + 100)) // the pause after a failure is over
  }
})

t.test('a hanging issuer never holds a lookup past the deadline', async (t) => {
  const issuer = await startIssuer(t)
  const source = keySource(t, issuer)
  issuer.mode = 'hang'
  const started = Date.now()
  const errors = await Promise.all(Array.from({ length: 10 }, (_, i) => failure(source.getKey(header(`kid-${i}`)))))
  const elapsed = Date.now() - started
  t.ok(errors.every((error) => error.code === 'jwks_unavailable'))
  t.ok(elapsed >= TIMEOUT_MS - 50 && elapsed < TIMEOUT_MS + 1000, `all answered within deadline + 1 s (${elapsed} ms)`)
  t.equal(issuer.requests, 1, 'one fetch in flight at a time')
  const during = Date.now()
  t.equal((await failure(source.getKey(header('kid-x')))).code, 'jwks_unavailable', 'during the pause after a failure')
  t.ok(Date.now() - during < 100, 'fails fast during the pause')
  t.equal(issuer.requests, 1)
})

t.test('known keys are revalidated in the background; a withdrawn key stops working', async (t) => {
  const issuer = await startIssuer(t)
  const source = keySource(t, issuer, { keyMaxAgeMs: 0, unknownKidCooldownMs: 0 })
  const old = issuer.keys[0]!
  await source.getKey(header(old.kid))
  await source.getKey(header(old.kid)) // due: revalidated in the background, and the issuer still has it
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.equal(issuer.requests, 2)
  t.match(await source.getKey(header(old.kid)), /PUBLIC KEY/, 'still served after a successful revalidation')
  await new Promise((resolve) => setTimeout(resolve, 100))
  const next = issuer.rotate({ replace: true })
  await source.getKey(header(old.kid)) // served while the revalidation runs
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.equal((await failure(source.getKey(header(old.kid)))).code, 'invalid_token', 'the withdrawn key is gone')
  t.match(await source.getKey(header(next.kid)), /PUBLIC KEY/)
})

t.test('lookups queued behind a slow fetch still answer within their own deadline', async (t) => {
  const issuer = await startIssuer(t)
  const source = keySource(t, issuer)
  const [a, b, c] = [issuer.keys[0]!, issuer.rotate(), issuer.rotate()]
  issuer.mode = 'slow'
  issuer.delayMs = TIMEOUT_MS * 0.6
  const started = Date.now()
  const first = source.getKey(header(a.kid))
  await new Promise((resolve) => setTimeout(resolve, 20))
  const queued = [b, c].map((key) => failure(source.getKey(header(key.kid))))
  t.match(await first, /PUBLIC KEY/, 'the first lookup gets its key')
  const errors = await Promise.all(queued)
  t.ok(errors.every((error) => error.code === 'jwks_unavailable'), 'the queued ones fail as unavailable')
  t.ok(Date.now() - started < TIMEOUT_MS + 200, 'no lookup waited past its deadline')
})

t.test('failures are logged without anything the issuer sent', async (t) => {
  const issuer = await startIssuer(t)
  const logged: object[] = []
  const source = keySource(t, issuer, { log: { warn: (details) => logged.push(details) } })
  issuer.mode = 'error'
  await failure(source.getKey(header('kid')))
  t.same(logged, [{ jwksFailure: { reason: 'JWKS_REQUEST_FAILED', status: 500 } }])
})

t.test('readiness: a background fetch at startup, retried until the issuer answers', async (t) => {
  const issuer = await startIssuer(t)
  issuer.mode = 'down'
  const source = keySource(t, issuer)
  t.notOk(source.ready)
  source.warmUp()
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.notOk(source.ready, 'not ready while the issuer is down')
  issuer.mode = 'up'
  await new Promise((resolve) => setTimeout(resolve, TIMEOUT_MS + 200))
  t.ok(source.ready, 'ready after the retry, with no request needed')
  source.warmUp()
  t.equal(issuer.requests, 2, 'no fetch once ready')
})

t.test('close() aborts the fetch under way', async (t) => {
  const issuer = await startIssuer(t)
  issuer.mode = 'hang'
  const source = keySource(t, issuer, { fetchTimeoutMs: 10_000 })
  const started = Date.now()
  const pending = failure(source.getKey(header('kid')))
  await new Promise((resolve) => setTimeout(resolve, 50))
  source.close()
  t.equal((await pending).code, 'jwks_unavailable')
  t.ok(Date.now() - started < 2000)
  source.warmUp()
  t.equal(issuer.requests, 1, 'no fetch after close')
})

t.test('through the app: 503 with Retry-After, and /ready', async (t) => {
  const issuer = await startIssuer(t)
  issuer.mode = 'down'
  const app = await buildApp(t, issuer, { JWKS_TIMEOUT_MS: String(TIMEOUT_MS) })
  const notReady = await app.inject('/ready')
  t.equal(notReady.statusCode, 503)
  t.equal(notReady.json().code, 'jwks_unavailable')

  const response = await app.inject({ url: '/api/private', headers: bearer(issuer.token()) })
  t.equal(response.statusCode, 503)
  t.match(response.headers['retry-after'], /^[1-9]\d*$/)
  t.same(response.json(), { statusCode: 503, error: 'Service Unavailable', code: 'jwks_unavailable', message: 'The token issuer\'s signing keys cannot be fetched right now' })
  t.notMatch(response.body, /502|html|ECONNRESET|127\.0\.0\.1/i, 'nothing from upstream reaches the client')

  issuer.mode = 'up'
  await new Promise((resolve) => setTimeout(resolve, TIMEOUT_MS + 200))
  t.equal((await app.inject('/ready')).statusCode, 200)
  t.equal((await app.inject({ url: '/api/private', headers: bearer(issuer.token()) })).statusCode, 200)
  t.equal((await app.inject('/health')).statusCode, 200)
})
