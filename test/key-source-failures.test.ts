import { runInNewContext } from 'node:vm'
import { setFlagsFromString } from 'node:v8'
import t from 'tap'
import { KeySource } from '../lib/keys/key-source.js'
import { buildApp, bearer, startIssuer } from './helpers/app.js'
import type { TestIssuer } from './helpers/issuer.js'
import { failure, header, keySource, sleep, TIMEOUT_MS } from './helpers/key-source.js'

t.test('issuer down, slow or broken: keys in hand are still served, unknown kids get 503 at once', async (t) => {
  for (const mode of ['down', 'hang', 'html', 'error', 'garbage', 'empty'] as const) {
    const issuer = await startIssuer(t)
    const logged: object[] = []
    const source = keySource(t, issuer, { keyMaxAgeMs: 100, unknownKidCooldownMs: 0, log: { warn: (details) => logged.push(details) } })
    const kid = issuer.keys[0]!.kid
    await source.getKey(header(kid))
    issuer.mode = mode
    const started = Date.now()
    t.match(await source.getKey(header(kid)), /PUBLIC KEY/, `${mode}: the key in hand is served without waiting`)
    t.ok(Date.now() - started < TIMEOUT_MS, `${mode}: no wait for the failing issuer`)
    while (logged.length === 0) {
      await sleep(10) // until the background renewal has failed
    }
    const during = Date.now()
    const error = await failure(source.getKey(header('new-kid')))
    t.equal(error.code, 'jwks_unavailable', `${mode}: an unknown kid is a 503`)
    t.ok(Date.now() - during < 100, `${mode}: at once, during the pause after the failure`)
    t.equal(error.statusCode, 503)
    t.match(error.headers['retry-after'], /^[1-9]\d*$/)
    t.match(await source.getKey(header(kid)), /PUBLIC KEY/, `${mode}: the key survives the failed refresh`)
    t.ok(source.ready, `${mode}: still ready`)
    t.equal(logged.length, 1, `${mode}: the failure is logged once`)
    t.notMatch(JSON.stringify(logged), /html|secret|Bad Gateway/, `${mode}: nothing the issuer sent reaches the log`)
  }
})

t.test('the log says why a fetch failed', async (t) => {
  const reasons: Record<string, string> = { down: 'UND_ERR_SOCKET', hang: 'TimeoutError', html: 'status 502', error: 'status 500', garbage: 'not JSON', empty: 'no usable signing key' }
  for (const [mode, reason] of Object.entries(reasons)) {
    const issuer = await startIssuer(t)
    issuer.mode = mode as TestIssuer['mode']
    const logged: object[] = []
    const source = keySource(t, issuer, { log: { warn: (details) => logged.push(details) } })
    await failure(source.getKey(header('kid')))
    t.same(logged, [{ issuer: issuer.issuer, reason }], mode)
  }
  const huge = await startIssuer(t)
  huge.extraJwks = ['x'.repeat(1024 * 1024)]
  const hugeLog: object[] = []
  const hugeSource = keySource(t, huge, { log: { warn: (details) => hugeLog.push(details) } })
  await failure(hugeSource.getKey(header('kid')))
  t.match(hugeLog, [{ reason: 'document too large' }])

  for (const [body, status, reason] of [['{}', 200, 'no usable signing key'], ['null', 200, 'no usable signing key'], ['{"keys":{}}', 200, 'no usable signing key'], ['', 204, 'not JSON']] as const) {
    const odd = await startIssuer(t)
    odd.jwksBody = body
    odd.jwksStatus = status
    const oddLog: object[] = []
    await failure(keySource(t, odd, { log: { warn: (details) => oddLog.push(details) } }).getKey(header('kid')))
    t.match(oddLog, [{ reason }], `${status} ${body}`)
  }
  const gone = await startIssuer(t)
  await gone.close()
  const nobody = new KeySource({ issuer: gone.url, algorithms: ['RS256'], allowLoopbackHttp: true, fetchTimeoutMs: TIMEOUT_MS, unknownKidCooldownMs: 0, log: { warn: (details) => t.match(details, { reason: 'ECONNREFUSED' }) } })
  t.teardown(() => nobody.close())
  await failure(nobody.getKey(header('kid')))
})

t.test('a redirect of the key set to another server is not followed', async (t) => {
  const issuer = await startIssuer(t)
  const elsewhere = await startIssuer(t)
  issuer.mode = 'redirect'
  issuer.redirectTo = `${elsewhere.url}.well-known/jwks.json`
  const logged: object[] = []
  const source = keySource(t, issuer, { log: { warn: (details) => logged.push(details) } })
  t.equal((await failure(source.getKey(header(elsewhere.keys[0]!.kid)))).code, 'jwks_unavailable')
  t.equal(elsewhere.requests, 0, 'the other server received nothing')
  t.match(logged, [{ reason: 'status 302' }])
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
})

t.test('the deadline holds while the garbage collector runs (Node 20\'s AbortSignal.any let a timeout signal be collected)', async (t) => {
  setFlagsFromString('--expose-gc')
  const collectGarbage = runInNewContext('gc') as () => void
  const issuer = await startIssuer(t)
  const source = keySource(t, issuer)
  issuer.mode = 'hang'
  const started = Date.now()
  const pending = failure(source.getKey(header('kid')))
  let settled = false
  void pending.finally(() => { settled = true })
  while (!settled && Date.now() - started < TIMEOUT_MS + 2000) {
    collectGarbage()
    await sleep(20)
  }
  t.ok(settled, `answered within deadline + 2 s while collecting (${Date.now() - started} ms)`)
  if (settled) {
    t.equal((await pending).code, 'jwks_unavailable')
  }
})

t.test('lookups arriving during a slow fetch wait for it and get their keys from it', async (t) => {
  const issuer = await startIssuer(t)
  const [a, b, c] = [issuer.keys[0]!, issuer.rotate(), issuer.rotate()]
  issuer.mode = 'slow'
  issuer.delayMs = TIMEOUT_MS * 0.6
  const source = keySource(t, issuer)
  const first = source.getKey(header(a.kid))
  await sleep(20)
  const queued = await Promise.all([b, c].map((key) => source.getKey(header(key.kid))))
  t.match(await first, /PUBLIC KEY/)
  t.ok(queued.every((pem) => pem.includes('PUBLIC KEY')))
  t.equal(issuer.requests, 1)
})

t.test('readiness: a background fetch at startup, retried until the issuer answers', async (t) => {
  const issuer = await startIssuer(t)
  issuer.mode = 'down'
  const source = keySource(t, issuer)
  t.notOk(source.ready)
  source.warmUp()
  await sleep(100)
  t.notOk(source.ready, 'not ready while the issuer is down')
  issuer.mode = 'up'
  await sleep(TIMEOUT_MS + 200)
  t.ok(source.ready, 'ready after the retry, with no request needed')
  source.warmUp()
  t.equal(issuer.requests, 2, 'no fetch once ready')
})

t.test('readiness survives a long startup outage (many retries)', async (t) => {
  const issuer = await startIssuer(t)
  issuer.mode = 'down'
  const source = keySource(t, issuer, { fetchTimeoutMs: 50 })
  source.warmUp()
  await sleep(800)
  t.ok(issuer.requests >= 5, `retried ${issuer.requests} times`)
  issuer.mode = 'up'
  await sleep(300)
  t.ok(source.ready)
})

t.test('a lookup after a failed fetch gets 503, even once the pause after it is over', async (t) => {
  // With no pause at all, a clock-based check would find the pause over at once: the token got a 401.
  const issuer = await startIssuer(t)
  issuer.mode = 'down'
  const source = keySource(t, issuer, { fetchTimeoutMs: 0 })
  const refused = await failure(source.getKey(header('kid')))
  t.equal(refused.code, 'jwks_unavailable')
  t.equal(refused.statusCode, 503)
})

t.test('close() aborts the fetch under way, quietly', async (t) => {
  const issuer = await startIssuer(t)
  issuer.mode = 'hang'
  const logged: object[] = []
  const source = keySource(t, issuer, { fetchTimeoutMs: 10_000, log: { warn: (details) => logged.push(details) } })
  const started = Date.now()
  const pending = failure(source.getKey(header('kid')))
  await sleep(50)
  source.close()
  t.equal((await pending).code, 'jwks_unavailable')
  t.ok(Date.now() - started < 2000)
  t.same(logged, [], 'closing is not a failure')
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

  const token = issuer.token()
  const response = await app.inject({ url: '/api/private', headers: bearer(token) })
  t.equal(response.statusCode, 503)
  t.match(response.headers['retry-after'], /^[1-9]\d*$/)
  t.same(response.json(), { statusCode: 503, error: 'Service Unavailable', code: 'jwks_unavailable', message: 'The token issuer\'s signing keys cannot be fetched right now' })
  t.notMatch(response.body, /502|html|ECONNRESET|UND_ERR|127\.0\.0\.1/i, 'nothing from upstream reaches the client')

  // The same token, again and again, while the issuer is down: an outage is never remembered as the answer.
  for (let i = 0; i < 3; i++) {
    t.equal((await app.inject({ url: '/api/private', headers: bearer(token) })).statusCode, 503)
  }
  issuer.mode = 'up'
  await sleep(TIMEOUT_MS + 200)
  t.equal((await app.inject('/ready')).statusCode, 200)
  t.equal((await app.inject({ url: '/api/private', headers: bearer(token) })).statusCode, 200, 'the same token passes once the issuer is back')
  t.equal((await app.inject({ url: '/api/private', headers: bearer(issuer.token()) })).statusCode, 200)
  t.equal((await app.inject('/health')).statusCode, 200)
})
