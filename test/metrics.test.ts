import type { FastifyInstance } from 'fastify'
import { Gauge } from 'prom-client'
import t from 'tap'
import { buildApp, bearer, keysLoaded, startIssuer } from './helpers/app.js'
import { AUDIENCE } from './helpers/issuer.js'
import { startServerProcess } from './helpers/process.js'

// The operational surface: Prometheus metrics on their own listener, request ids, the access log.

async function scrape (app: FastifyInstance): Promise<string> {
  const response = await fetch(app.metrics.url!)
  t.equal(response.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8')
  return response.text()
}

/** The value of one series, e.g. `auth_decisions_total{route="/api/private",method="GET",outcome="allowed"}`. */
function sample (text: string, series: string): number | undefined {
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${series} `))
  return line === undefined ? undefined : Number(line.slice(series.length + 1))
}

async function metricsApp (t: Parameters<typeof buildApp>[0], env: Record<string, string> = {}) {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer, env)
  await keysLoaded(app)
  return { issuer, app }
}

t.test('the metrics: decisions by route and outcome, the token cache, the key sets, the runtime', async (t) => {
  const { issuer, app } = await metricsApp(t)
  t.match(app.metrics.url, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/, 'a listener of its own, on HOST')
  const token = issuer.token({ scope: 'read:messages' })
  for (let i = 0; i < 3; i++) {
    await app.inject({ url: '/api/private', headers: bearer(token) })
  }
  await app.inject({ url: '/api/private-scoped', headers: bearer(issuer.token()) })
  await app.inject({ url: '/api/private' })
  await app.inject({ url: '/api/private', headers: bearer(issuer.token({}, undefined, { kid: 'unknown-kid' })) })
  const text = await scrape(app)

  const decision = (route: string, outcome: string) => sample(text, `auth_decisions_total{route="${route}",method="GET",outcome="${outcome}"}`)
  t.equal(decision('/api/private', 'allowed'), 3)
  t.equal(decision('/api/private', 'authorization_header_missing'), 1)
  t.equal(decision('/api/private', 'invalid_token'), 1, 'the unknown kid')
  t.equal(decision('/api/private-scoped', 'insufficient_scope'), 1)
  t.equal(decision('/api/private', 'token_expired'), undefined, 'an outcome that never happened has no series')
  t.equal(sample(text, 'auth_token_cache_lookups_total{result="hit"}'), 1, 'stored on the second use, a hit on the third')
  t.equal(sample(text, 'auth_token_cache_lookups_total{result="miss"}'), 4)
  t.equal(sample(text, 'auth_token_cache_entries'), 1)
  t.ok(sample(text, 'auth_token_cache_bytes')! > 300)
  t.equal(sample(text, 'auth_rejection_cache_entries'), 0, 'an unknown kid is no permanent rejection')
  t.equal(sample(text, `jwks_fetches_total{issuer="${issuer.issuer}",result="success"}`), 1)
  t.equal(sample(text, `jwks_fetch_duration_seconds_count{issuer="${issuer.issuer}"}`), 1)
  t.equal(sample(text, `jwks_keys{issuer="${issuer.issuer}"}`), 1)
  t.ok(sample(text, `jwks_last_success_age_seconds{issuer="${issuer.issuer}"}`)! < 60)
  t.equal(sample(text, `jwks_unknown_kid_lookups_total{issuer="${issuer.issuer}"}`), 1)
  t.equal(sample(text, 'dpop_replay_store_entries'), 0)
  t.equal(sample(text, 'http_requests_shed_total'), 0)
  t.match(text, /^nodejs_eventloop_lag_p99_seconds /m, 'Node runtime metrics')
  t.match(text, /^nodejs_heap_size_used_bytes /m)
  t.match(text, /^nodejs_gc_duration_seconds_count/m)
  t.notMatch(text, token.split('.')[2]!, 'no token in any label')
  t.notMatch(text, /http_request_duration_seconds_count\{/, 'the request-duration histogram is opt-in')

  t.equal((await fetch(app.metrics.url!.replace('/metrics', '/other'))).status, 404)
  t.equal((await app.inject('/metrics')).statusCode, 404, 'never on the API port')

  new Gauge({ name: 'broken', help: 'a collector that fails', registers: [app.metrics.registry], collect () { throw new Error('broken') } })
  const failed = await fetch(app.metrics.url!)
  t.equal(failed.status, 500, 'a collector that fails is a 500, not a crash')
  t.equal(await failed.text(), 'Internal Server Error\n')
})

t.test('a failed fetch is counted, and an issuer never reached has no age', async (t) => {
  const issuer = await startIssuer(t)
  issuer.mode = 'down'
  const app = await buildApp(t, issuer)
  await app.inject({ url: '/api/private', headers: bearer(issuer.token()) })
  const text = await scrape(app)
  t.ok(sample(text, `jwks_fetches_total{issuer="${issuer.issuer}",result="failure"}`)! >= 1)
  t.equal(sample(text, `jwks_last_success_age_seconds{issuer="${issuer.issuer}"}`), undefined)
  t.equal(sample(text, 'auth_decisions_total{route="/api/private",method="GET",outcome="jwks_unavailable"}'), 1)
})

t.test('METRICS_REQUEST_DURATION=true: duration by route pattern, method and status; an unknown path is one label', async (t) => {
  const { app } = await metricsApp(t, { METRICS_REQUEST_DURATION: 'true' })
  await app.inject('/api/public')
  await app.inject('/nothing/here/123')
  await app.inject('/nothing/else')
  const text = await scrape(app)
  t.equal(sample(text, 'http_request_duration_seconds_count{route="/api/public",method="GET",status_code="200"}'), 1)
  t.equal(sample(text, 'http_request_duration_seconds_count{route="unknown",method="GET",status_code="404"}'), 2)
  t.equal(sample(text, 'http_requests_in_flight'), 0)
  t.notMatch(text, /nothing/, 'no raw URL')
})

t.test('METRICS_PORT=off: nothing listens; a port already taken fails startup', async (t) => {
  const issuer = await startIssuer(t)
  t.equal((await buildApp(t, issuer, { METRICS_PORT: 'off' })).metrics.url, undefined)
  const first = await buildApp(t, issuer)
  const taken = new URL(first.metrics.url!).port
  await t.rejects(buildApp(t, issuer, { METRICS_PORT: taken }), { code: 'EADDRINUSE' })
})

t.test('request ids and the access log, as the process writes them', async (t) => {
  const issuer = await startIssuer(t)
  const server = startServerProcess(t, { AUTH0_ISSUER_URL: issuer.issuer, AUTH0_JWKS_URL: `${issuer.url}.well-known/jwks.json`, AUTH0_AUDIENCE: AUDIENCE, PORT: '0', ACCESS_LOG: 'true', LOG_LEVEL: 'info' })
  const base = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(await server.waitFor(/Server listening/))![1]!
  const token = issuer.token({ sub: 'auth0|7', scope: 'read:messages' })
  const get = async (path: string, headers: Record<string, string> = {}) => (await fetch(`${base}${path}`, { headers })).headers.get('x-request-id')!

  t.equal(await get('/api/private', { ...bearer(token), 'x-request-id': 'trace-abc.123:x' }), 'trace-abc.123:x', 'a safe incoming id is used and echoed')
  const replaced = await get('/api/private', { 'x-request-id': 'bad id with spaces' })
  t.match(replaced, /^[A-Za-z0-9_-]{8}-[0-9a-z]+$/, 'an unsafe one is replaced by ours')
  t.not(await get('/api/public', { 'x-request-id': 'x'.repeat(129) }), 'x'.repeat(129), 'so is one too long')
  const ours = await get('/api/private-scoped', bearer(issuer.token()))
  t.not(ours, await get('/api/public'), 'ids are unique')

  const access = await server.waitFor(new RegExp(`"reqId":"${ours}".*"msg":"access"`))
  t.match(JSON.parse(access), { reqId: ours, method: 'GET', route: '/api/private-scoped', status: 403, outcome: 'insufficient_scope', sub: 'user-1', msg: 'access' })
  t.match(JSON.parse(await server.waitFor(/"reqId":"trace-abc\.123:x".*"msg":"access"/)), { status: 200, outcome: 'allowed', sub: 'auth0|7' })
  t.match(JSON.parse(await server.waitFor(new RegExp(`"reqId":"${replaced}".*"msg":"access"`))), { status: 401, outcome: 'authorization_header_missing' })
  t.notMatch(JSON.parse(await server.waitFor(/"route":"\/api\/public".*"msg":"access"/)), { outcome: /./ }, 'no outcome on a public route')
  t.notMatch(server.stdout(), token.split('.')[2]!, 'no token in the access log')
  server.kill('SIGTERM')
  await server.exited
})
