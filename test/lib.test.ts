import Fastify, { type FastifyReply, type FastifyRequest } from 'fastify'
import { Writable } from 'node:stream'
import { Registry } from 'prom-client'
import { ServiceMetrics } from '../lib/metrics.js'
import { accessRecord } from '../plugins/access-log.js'
import t from 'tap'
import { parseCredentials } from '../lib/tokens/credentials.js'
import { loadConfig } from '../lib/config.js'
import { deferChildren, loggingOptions } from '../lib/logging.js'
import { OutcomeCache } from '../lib/tokens/outcome-cache.js'
import { RecentHeaders } from '../lib/tokens/recent-headers.js'
import { sleep } from './helpers/key-source.js'
import { hash } from 'node:crypto'
import { AuthError } from '../lib/errors.js'
import { grantedScopes, isSatisfied, routePolicy } from '../lib/tokens/scopes.js'
import { toAuthError } from '../lib/tokens/token-errors.js'
import { checkClaims, trustedUntilMs } from '../lib/tokens/claims.js'
import { jwksUriOf, metadataUrls } from '../lib/keys/discovery.js'
import { describeFailure, FetchError } from '../lib/keys/http.js'
import { EventLoopLoad } from '../lib/event-loop-load.js'

t.test('credentials follow RFC 6750 §2.1 and RFC 9449 §7.1, as the DPoP mode allows', async (t) => {
  t.same(parseCredentials('Bearer abc.DEF-_~+/.x==', 'allowed'), { scheme: 'Bearer', token: 'abc.DEF-_~+/.x==' })
  t.same(parseCredentials('bearer a.b.c', 'disabled'), { scheme: 'Bearer', token: 'a.b.c' }, 'the scheme is case-insensitive')
  t.same(parseCredentials('BEARER   a.b.c  ', 'allowed'), { scheme: 'Bearer', token: 'a.b.c' }, 'extra spaces around the token')
  t.same(parseCredentials('dpop a.b.c', 'required'), { scheme: 'DPoP', token: 'a.b.c' })
  for (const header of ['', 'Bearer', 'Bearer ', 'Basic a.b.c', 'Bearera.b.c', 'Bearer a.b.c d', 'Bearer a"b', 'Bearer a=b', 'Bearer\ta.b.c', 'Token a.b.c', 'DPoP', 'DPoPa.b.c']) {
    t.throws(() => parseCredentials(header, 'allowed'), { code: 'invalid_header', message: 'Authorization header must be Bearer or DPoP followed by one token' }, JSON.stringify(header))
  }
  t.throws(() => parseCredentials('DPoP a.b.c', 'disabled'), { code: 'invalid_header', message: 'Authorization header must be Bearer followed by one token' })
  t.throws(() => parseCredentials('Bearer a.b.c', 'required'), { code: 'invalid_header', message: /DPoP-bound tokens only/ })
  t.throws(() => parseCredentials(undefined, 'allowed'), { code: 'authorization_header_missing' })
})

t.test('scopes from the scope string and the permissions array', async (t) => {
  t.same([...grantedScopes({ scope: ' a  b ', permissions: ['c', 1, 'a'] })].sort(), ['a', 'b', 'c'])
  t.same([...grantedScopes({ scope: ['a'], permissions: 'b' })], [])
  t.same([...grantedScopes({})], [])
  const all = routePolicy({ scopes: ['a', 'b'] }, 'route').requirement!
  const any = routePolicy({ scopes: { anyOf: ['a', 'b'] } }, 'route').requirement!
  t.ok(isSatisfied(all, new Set(['a', 'b', 'c'])))
  t.notOk(isSatisfied(all, new Set(['a'])))
  t.ok(isSatisfied(any, new Set(['b'])))
  t.notOk(isSatisfied(any, new Set(['c'])))
  t.same(routePolicy(true, 'route'), { optional: false, requirement: undefined }, '`true` asks for a valid token only')
  t.same(routePolicy('optional', 'route'), { optional: true, requirement: undefined }, '`optional`: a valid token if there is a header')
})

t.test('token errors are mapped by code; anything else is ours and rethrown', async (t) => {
  const own = new AuthError('invalid_header', 'x')
  t.equal(toAuthError(own), own)
  t.equal(toAuthError({ code: 'FST_JWT_AUTHORIZATION_TOKEN_EXPIRED' }).code, 'token_expired')
  t.equal(toAuthError({ code: 'FAST_JWT_SOMETHING_NEW' }).code, 'invalid_token', 'an unforeseen token error is still a 401')
  const bug = new TypeError('a bug')
  t.throws(() => toAuthError(bug), bug)
  t.throws(() => toAuthError(null))
})

t.test('logs: JSON with credentials redacted; pretty only for a developer at a terminal', async (t) => {
  const dev = loadConfig({ LOG_LEVEL: 'debug' })
  const production = loadConfig({ NODE_ENV: 'production', AUTH0_DOMAIN: 'tenant.auth0.com', AUTH0_AUDIENCE: 'api' })
  const logger = (config: typeof dev, isTTY: boolean): { transport?: unknown } => loggingOptions(config, isTTY).logger as { transport?: unknown }
  t.match(logger(dev, false), { level: 'debug', redact: { paths: ['req.headers.authorization', 'req.headers.cookie'] } })
  t.notOk(logger(dev, false).transport, 'JSON when not a terminal')
  t.match(logger(dev, true), { transport: { target: 'pino-pretty' } })
  t.notOk(logger(production, true).transport, 'JSON in production, terminal or not')
  const requestLinesOff = (config: typeof dev): boolean => loggingOptions(config, false).logController!.isLogDisabled({} as FastifyRequest)
  t.equal(requestLinesOff(production), true, 'no per-request lines at the default level')
  t.equal(requestLinesOff(dev), false, 'request lines at debug')
  t.equal(requestLinesOff(loadConfig({ LOG_LEVEL: 'trace' })), false, 'and at trace')
})

t.test('deferred children: a request\'s pino child is made when it first logs, and logs as that child would', async (t) => {
  const lines: Record<string, unknown>[] = []
  let made = 0
  const stream = new Writable({ write (chunk: Buffer, _encoding, done) { lines.push(JSON.parse(chunk.toString())); done() } })
  const app = Fastify({ logger: { level: 'info', stream, onChild: () => { made++ } } })
  t.teardown(() => app.close())
  deferChildren(app.log)

  const log = app.log.child({ reqId: 'r1' }, {}) // as Fastify makes every request's
  t.equal(log.level, 'info', 'its level is its parent\'s')
  log.silent('never written')
  t.equal(made, 0, 'no pino child while nothing is logged')
  log.info({ route: '/a' }, 'served')
  log.warn('and warned')
  t.equal(made, 1, 'one, made on the first line')
  t.match(lines, [{ level: 30, reqId: 'r1', route: '/a', msg: 'served' }, { level: 40, reqId: 'r1', msg: 'and warned' }])

  log.debug('below the level')
  t.equal(lines.length, 2, 'levels hold as before')
  log.level = 'debug'
  log.debug('now written')
  t.match(lines[2], { level: 20, reqId: 'r1', msg: 'now written' })
  t.equal(log.level, 'debug', 'read back from the child')
  t.equal(app.log.level, 'info', 'a child\'s level is its own')

  const nested = log.child({ step: 'verify' })
  t.equal(made, 1, 'a child\'s children are deferred too')
  nested.error('nested')
  t.equal(made, 2)
  t.match(lines[3], { level: 50, reqId: 'r1', step: 'verify', msg: 'nested' })
  const untouched = app.log.child({ reqId: 'r2' })
  t.equal(untouched.level, 'info')
  t.equal(made, 2, 'nothing made for a child never written to')

  app.log.child({ reqId: 'r3' }, { level: 'error' }) // a route's own level
  t.equal(made, 3, 'a child with options of its own is made at once')

  // pino's own methods, beyond Fastify's logger type, reach the real child too
  const pino = app.log.child({ reqId: 'r4' }) as unknown as { isLevelEnabled (level: string): boolean, bindings (): object, setBindings (bindings: object): void, flush (): void, info (message: string): void }
  t.equal(pino.isLevelEnabled('info'), true)
  t.equal(pino.isLevelEnabled('debug'), false)
  t.same(pino.bindings(), { reqId: 'r4' })
  pino.setBindings({ sub: 'auth0|7' })
  pino.info('bound')
  pino.flush()
  t.match(lines[4], { reqId: 'r4', sub: 'auth0|7', msg: 'bound' })
})

t.test('recent headers: the exact header only, while its outcome holds, for at most two lifetimes, within a byte budget', async (t) => {
  const recent = new RecentHeaders<{ expiresAt: number, version: number }>(200, 100)
  t.teardown(() => recent.close())
  const outcome = { expiresAt: 1000, version: 1 }
  recent.set('Bearer a.b.c', outcome)
  t.equal(recent.get(`Bearer ${'a.b.c'.slice(0)}`, 0, 1), outcome, 'an equal header, however it was made')
  t.equal(recent.get('Bearer a.b.d', 0, 1), undefined, 'a header differing in one character')
  t.equal(recent.get('Bearer a.b.c', 1000, 1), undefined, 'once the outcome has ended')
  t.equal(recent.get('Bearer a.b.c', 0, 2), undefined, 'once the key set has changed')
  recent.set(`Bearer ${'x'.repeat(82)}`, outcome)
  t.equal(recent.get(`Bearer ${'x'.repeat(82)}`, 0, 1), undefined, 'not kept past the byte budget (12 + 89 > 100)')
  await sleep(250)
  t.equal(recent.get('Bearer a.b.c', 0, 1), outcome, 'one lifetime on, still held')
  recent.set(`Bearer ${'x'.repeat(82)}`, outcome)
  t.equal(recent.get(`Bearer ${'x'.repeat(82)}`, 0, 1), outcome, 'a new generation has a budget of its own')
  await sleep(250)
  t.equal(recent.get('Bearer a.b.c', 0, 1), undefined, 'two lifetimes on, dropped whether or not it was used')

  const roomy = new RecentHeaders<{ expiresAt: number, version: number }>(60_000, 1_000_000)
  const long = `Bearer ${'y'.repeat(16_377)}`
  roomy.set(long, outcome)
  roomy.set(long.slice(0, -1), outcome)
  t.equal(roomy.get(long, 0, 1), undefined, 'not a header longer than V8 hashes in full')
  t.equal(roomy.get(long.slice(0, -1), 0, 1), outcome, 'up to that length')
  roomy.close()
  t.equal(roomy.get(long.slice(0, -1), 0, 1), undefined, 'closing drops everything')
})

t.test('the outcome cache: stored on the second offer, bounded, expiring, tied to the key set version', async (t) => {
  const [a, b, c, expired] = ['a', 'b', 'c', 'expired'].map((name) => hash('sha256', name, 'base64')) as [string, string, string, string]
  interface Named { name: string, expiresAt: number, version: number }
  const named = (name: string, expiresAt = 1000, version = 1): Named => ({ name, expiresAt, version })
  const cache = new OutcomeCache<Named>(2, 100)
  const offer = (key: string, name: string, bytes = 10): void => {
    cache.set(key, named(name), 0, bytes)
    cache.set(key, named(name), 0, bytes)
  }
  cache.set(a, named('A'), 0, 10)
  t.equal(cache.get(a, 0, 1), undefined, 'a first offer is only noted')
  cache.set(a, named('A'), 0, 10)
  t.equal(cache.get(a, 999, 1)?.name, 'A', 'the second is stored')
  t.equal(cache.get(a, 1000, 1), undefined, 'gone at expiresAt')
  offer(a, 'A')
  t.equal(cache.get(a, 0, 2), undefined, 'gone once the key set changed')
  t.equal(cache.get(a, 0, 1), undefined, 'and removed')
  cache.set(expired, named('X', 10), 10, 1)
  cache.set(expired, named('X', 10), 10, 1)
  t.equal(cache.get(expired, 0, 1), undefined, 'an outcome already expired is not stored')
  offer(a, 'A')
  offer(b, 'B')
  offer(a, 'A2')
  offer(c, 'C')
  t.equal(cache.get(b, 0, 1), undefined, 'past maxEntries the oldest entry made room')
  t.equal(cache.get(a, 0, 1)?.name, 'A2', 'storing again renews an entry')
  t.equal(cache.get(c, 0, 1)?.name, 'C')

  const heavy = new OutcomeCache<Named>(10, 100)
  const byWeight = (key: string, bytes: number): void => {
    heavy.set(key, named(key), 0, bytes)
    heavy.set(key, named(key), 0, bytes)
  }
  byWeight(a, 60)
  byWeight(b, 30)
  t.equal(heavy.get(a, 0, 1)?.name, a)
  byWeight(c, 30)
  t.equal(heavy.get(a, 0, 1), undefined, 'past maxBytes the oldest entry made room')
  t.equal(heavy.get(b, 0, 1)?.name, b)
  t.equal(heavy.get(c, 0, 1)?.name, c)
  byWeight(expired, 101)
  t.equal(heavy.get(expired, 0, 1), undefined, 'an entry heavier than the whole budget is not stored')
  t.equal(heavy.get(b, 0, 1)?.name, b, 'and evicts nothing')
})

t.test('claim checks stand on their own, whatever chose the key', async (t) => {
  const rules = { issuers: new Set(['https://a.example/']), audiences: ['api'], profile: 'auth0' as const, clockToleranceSec: 0, allowedClients: new Set<string>() }
  const claims = { iss: 'https://a.example/', aud: 'api', exp: 2e9 }
  t.equal(checkClaims({ ...claims }, rules, 1e9).iss, 'https://a.example/')
  t.throws(() => checkClaims({ ...claims, iss: 'https://b.example/' }, rules, 1e9), { code: 'invalid_claims', message: 'Token issuer is not trusted' })
  t.throws(() => checkClaims({ ...claims, iss: ['https://a.example/'] }, rules, 1e9), { code: 'invalid_claims' })
  t.equal(trustedUntilMs({ ...claims, iat: 1e9 }, { ...rules, maxTokenAgeSec: 60, clockToleranceSec: 5 }), (1e9 + 65) * 1000, 'until the end of the accepted age')
  t.equal(trustedUntilMs({ ...claims }, { ...rules, clockToleranceSec: 5 }), (2e9 + 5) * 1000, 'or exp, with the tolerance fast-jwt grants')
})

t.test('metadata documents: anything but a JSON object is refused', async (t) => {
  for (const document of [null, [], 'text', 42]) {
    t.throws(() => jwksUriOf(document, 'https://a.example/', false), { name: 'FetchError', message: 'metadata is not a JSON object' }, JSON.stringify(document))
  }
  t.equal(jwksUriOf({ issuer: 'https://a.example/', jwks_uri: 'https://a.example/keys' }, 'https://a.example/', false), 'https://a.example/keys')
  t.same(metadataUrls('https://a.example/realms/main/'), ['https://a.example/realms/main/.well-known/openid-configuration', 'https://a.example/.well-known/oauth-authorization-server/realms/main'])
  t.same(metadataUrls('https://a.example'), ['https://a.example/.well-known/openid-configuration', 'https://a.example/.well-known/oauth-authorization-server'])
})

t.test('a fetch failure is described by its code, or its name when it has none', async (t) => {
  t.equal(describeFailure(new FetchError('status 500', 500)), 'status 500')
  t.equal(describeFailure(Object.assign(new Error('x'), { cause: { code: 'ECONNREFUSED' } })), 'ECONNREFUSED')
  t.equal(describeFailure(Object.assign(new Error('x'), { code: 'UND_ERR_SOCKET' })), 'UND_ERR_SOCKET')
  t.equal(describeFailure(new DOMException('late', 'TimeoutError')), 'TimeoutError', 'a DOMException\'s numeric code is not a reason')
  t.equal(describeFailure(new RangeError('x')), 'RangeError')
})

t.test('metrics with nothing to watch yet: no samples, no failure', async (t) => {
  const metrics = new ServiceMetrics(new Registry())
  const text = await metrics.registry.metrics()
  t.match(text, /^auth_token_cache_entries 0$/m)
  t.match(text, /^dpop_replay_store_entries 0$/m)
  t.match(text, /^auth_token_cache_lookups_total\{result="hit"\} 0/m)
})

t.test('access-log lines: the outcome of a protected route, and one label for an unknown path', async (t) => {
  const request = (config: object, user: unknown, url?: string, authOutcome?: string) => ({ id: 'r1', method: 'GET', routeOptions: { url, config }, user, authOutcome }) as unknown as FastifyRequest
  const reply = { statusCode: 200, elapsedTime: 1.23456 } as FastifyReply
  t.same(accessRecord(request({ auth: 'optional' }, null, '/a'), reply), { reqId: 'r1', method: 'GET', route: '/a', status: 200, durationMs: 1.235, outcome: 'anonymous', sub: undefined })
  t.match(accessRecord(request({ auth: true }, { sub: 's' }, '/a'), reply), { outcome: 'allowed', sub: 's' })
  t.match(accessRecord(request({ auth: true }, null, '/a', 'invalid_token'), reply), { outcome: 'invalid_token' })
  t.match(accessRecord(request({}, null), reply), { route: 'unknown', outcome: undefined })
})

t.test('event-loop load: the last interval\'s mean delay and busy share, Infinity for a loop held throughout', async (t) => {
  const load = new EventLoopLoad()
  t.teardown(() => load.stop())
  const hold = (ms: number) => {
    for (const until = Date.now() + ms; Date.now() < until;) {
      // busy
    }
  }
  await sleep(100)
  load.sample() // the first interval holds this test file's loading
  await sleep(200)
  load.sample()
  t.ok(load.delayMs < 50 && load.utilization < 0.5, `idle: ${load.delayMs} ms, ${load.utilization}`)

  for (let i = 0; i < 8; i++) {
    hold(40)
    await sleep(10)
  }
  load.sample()
  t.ok(load.delayMs > 10 && load.delayMs < Infinity && load.utilization > 0.6, `busy between ticks: ${load.delayMs} ms, ${load.utilization}`)

  hold(150)
  load.sample()
  t.equal(load.delayMs, Infinity, 'no tick since the last sample: held throughout')
  t.ok(load.utilization > 0.9)
})
