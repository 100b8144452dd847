import { connect, type Socket } from 'node:net'
import t, { type Test } from 'tap'
import { buildApp, bearer, keysLoaded, startIssuer } from './helpers/app.js'

// Every server limit is finite, and each is tried for real over raw sockets.

/** Opens a raw connection, writes `text`, and resolves with everything read until the server closes it, and when. */
function exchange (port: number, text: string, { keepOpen = false } = {}): Promise<{ response: string, closedAfterMs: number, socket: Socket }> {
  return new Promise((resolve) => {
    const started = Date.now()
    let response = ''
    const socket = connect(port, '127.0.0.1', () => socket.write(text))
    socket.setEncoding('latin1')
    socket.on('data', (chunk: string) => { response += chunk })
    socket.on('error', () => {})
    socket.on('close', () => resolve({ response, closedAfterMs: Date.now() - started, socket }))
    if (!keepOpen) {
      socket.setTimeout(10_000, () => socket.destroy())
    }
  })
}

async function listening (t: Parameters<typeof buildApp>[0], env: Record<string, string> = {}) {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer, env)
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { issuer, app, port: (app.server.address() as { port: number }).port }
}

const body = (response: string): unknown => JSON.parse(response.slice(response.indexOf('\r\n\r\n') + 4))

t.test('headers that trickle in are cut off at HEADERS_TIMEOUT_MS', async (t) => {
  const { port } = await listening(t, { HEADERS_TIMEOUT_MS: '1000' })
  const { response, closedAfterMs } = await exchange(port, 'GET /api/public HTTP/1.1\r\nhost: x\r\nx-slow: ')
  t.ok(closedAfterMs >= 900 && closedAfterMs < 2600, `closed after ${closedAfterMs} ms`)
  t.match(response, /^HTTP\/1\.1 408 /)
  t.same(body(response), { statusCode: 408, error: 'Request Timeout', code: 'request_timeout', message: 'Request Timeout' })
})

t.test('a body that trickles in is cut off at REQUEST_TIMEOUT_MS', async (t) => {
  const { port } = await listening(t, { REQUEST_TIMEOUT_MS: '1000', HEADERS_TIMEOUT_MS: '1000' })
  const { response, closedAfterMs } = await exchange(port, 'POST /api/public HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"a":')
  t.ok(closedAfterMs >= 900 && closedAfterMs < 2600, `closed after ${closedAfterMs} ms`)
  t.match(response, /^HTTP\/1\.1 408 /)
})

t.test('an idle keep-alive connection is closed at KEEP_ALIVE_TIMEOUT_MS', async (t) => {
  const { port } = await listening(t, { KEEP_ALIVE_TIMEOUT_MS: '1000' })
  const { response, closedAfterMs } = await exchange(port, 'GET /api/public HTTP/1.1\r\nhost: x\r\n\r\n', { keepOpen: true })
  t.match(response, /^HTTP\/1\.1 200 /)
  t.ok(closedAfterMs >= 900 && closedAfterMs < 2600, `closed after ${closedAfterMs} ms`)
})

t.test('headers over MAX_HEADER_SIZE: 431 in JSON; a body over 64 KiB: 413', async (t) => {
  const { port } = await listening(t, { MAX_HEADER_SIZE: '8192' })
  const { response } = await exchange(port, `GET /api/private HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${'a'.repeat(9000)}\r\n\r\n`)
  t.match(response, /^HTTP\/1\.1 431 /)
  t.same(body(response), { statusCode: 431, error: 'Request Header Fields Too Large', code: 'headers_too_large', message: 'Request Header Fields Too Large' })
  const reset = connect(port, '127.0.0.1', () => {
    reset.write('GET /api/public HTTP/1.1\r\nhost: x\r\n')
    setTimeout(() => reset.resetAndDestroy(), 50) // a client that gives up mid-request: nothing to answer
  })
  await new Promise((resolve) => reset.on('close', resolve))
  const garbage = await exchange(port, 'NOT HTTP AT ALL\r\n\r\n')
  t.same(body(garbage.response), { statusCode: 400, error: 'Bad Request', code: 'bad_request', message: 'Bad Request' }, 'a request that is not HTTP')

  const big = await fetch(`http://127.0.0.1:${port}/api/public`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ x: 'y'.repeat(70_000) }) })
  t.equal(big.status, 413)
})

t.test('a token past AUTH0_MAX_TOKEN_LENGTH is refused before it is hashed, decoded or looked up', async (t) => {
  const { issuer, app } = await listening(t, { AUTH0_MAX_TOKEN_LENGTH: '1024' })
  const long = issuer.token({ padding: 'p'.repeat(1000) })
  const fetches = issuer.requests
  const response = await app.inject({ url: '/api/private', headers: bearer(long) })
  t.equal(response.statusCode, 401)
  t.same(response.json(), { statusCode: 401, error: 'Unauthorized', code: 'invalid_token', message: 'Token is longer than this API accepts' })
  t.equal(issuer.requests, fetches, 'no key was looked up')
  t.equal((await app.inject({ url: '/api/private', headers: bearer(issuer.token()) })).statusCode, 200, 'a token within the limit passes')
})

t.test('two Authorization headers: one fixed answer, 401 invalid_header, and no key fetched', async (t) => {
  const { issuer, app, port } = await listening(t)
  await keysLoaded(app)
  const token = issuer.token()
  const fetches = issuer.requests + issuer.discoveryRequests
  issuer.mode = 'down' // the CVE-2025-64527 setting: duplicate headers while the issuer fails
  for (const [first, second] of [[token, token], [token, 'junk'], ['junk', token]]) {
    const { response } = await exchange(port, `GET /api/private HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${first}\r\nauthorization: Bearer ${second}\r\nconnection: close\r\n\r\n`)
    t.match(response, /^HTTP\/1\.1 401 /)
    t.match(body(response), { code: 'invalid_header' })
  }
  t.equal(issuer.requests + issuer.discoveryRequests, fetches)
  const { response } = await exchange(port, `GET /api/private HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${token}\r\nconnection: close\r\n\r\n`)
  t.match(response, /^HTTP\/1\.1 200 /, 'the same token alone passes (its key is in hand)')
})

/** Holds the event loop for `ms`, as a burst past capacity would. */
function hold (ms: number): void {
  const until = Date.now() + ms
  while (Date.now() < until) {
    // busy
  }
}

/** Holds the event loop for `ms` of every `everyMs` until stopped (or the test ends, whatever fails first). */
function burst (t: Test, ms: number, everyMs: number): () => void {
  const timer = setInterval(() => hold(ms), everyMs)
  const stop = () => clearInterval(timer)
  t.teardown(stop)
  return stop
}

/** The first 503 of requests sent one after the other, within 5 s: the sampler needs a moment to see the load. */
async function firstShed (send: () => Promise<Response>): Promise<Response | undefined> {
  for (const until = Date.now() + 5000; Date.now() < until;) {
    const response = await send()
    if (response.status === 503) {
      return response
    }
  }
  return undefined
}

t.test('overload is shed with 503 overloaded and Retry-After before the auth hook; probes are never shed', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer, { OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '20', OVERLOAD_RETRY_AFTER_SEC: '3' }, async (routes) => {
    routes.get('/mine', () => ({ mine: true }))
    routes.get('/mine/guarded', { onRequest: (_request, _reply, done) => done() }, () => ({ mine: true }))
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  const answered: number[] = [] // statuses of /api/private
  const get = async (path: string, headers = {}) => {
    const response = await fetch(`http://127.0.0.1:${port}${path}`, { headers })
    if (path === '/api/private') answered.push(response.status)
    return response
  }
  const token = issuer.token()
  hold(120)
  t.equal((await get('/api/private', bearer(token))).status, 200, 'startup is not load: nothing is shed in the first 300 ms')
  await new Promise((resolve) => setTimeout(resolve, 300))
  const stopBurst = burst(t, 60, 70)
  const shed = await firstShed(() => get('/api/private', bearer(token)))
  t.equal(shed?.status, 503)
  t.equal(shed?.headers.get('retry-after'), '3')
  t.ok(shed?.headers.get('x-request-id'), 'the request id is echoed on a shed request too')
  t.same(await shed?.json(), { statusCode: 503, error: 'Service Unavailable', code: 'overloaded', message: 'The service is overloaded: retry shortly' })
  t.equal((await get('/api/public')).status, 503, 'every route is shed')
  t.equal((await get('/mine')).status, 503, 'a route added beside the app too')
  t.equal((await get('/mine/guarded')).status, 503, 'and one with hooks of its own')
  t.equal((await get('/docs/json')).status, 503, 'and the docs, whose plugin loads after shedding')
  t.equal((await get('/nowhere')).status, 404, 'an unknown URL is answered 404, not shed: the refusal would cost as much')
  t.equal((await get('/health')).status, 200, 'liveness never fails for load')
  t.equal((await get('/health?probe=kubelet')).status, 200, 'whatever its query')
  t.equal((await get('/ready')).status, 200, 'readiness follows keys, not load')
  stopBurst()
  let recovered = false
  for (let i = 0; i < 50 && !recovered; i++) {
    await new Promise((resolve) => setTimeout(resolve, 50))
    recovered = (await get('/api/private', bearer(token))).status === 200
  }
  t.ok(recovered, 'served again once the pressure is gone')
  const metrics = await (await fetch(app.metrics.url!)).text()
  t.match(metrics, /^http_requests_shed_total [1-9]/m, 'shed requests are counted')
  const decided = [...metrics.matchAll(/^auth_decisions_total\{[^}]*route="\/api\/private"[^}]*\} (\d+)$/gm)].reduce((sum, [, count]) => sum + Number(count), 0)
  t.equal(decided, answered.filter((status) => status === 200).length, 'a shed request never reached the auth hook: only the served ones were decided')
})

t.test('shedding on event-loop utilisation alone (OVERLOAD_MAX_EVENT_LOOP_UTILIZATION)', async (t) => {
  const app = await buildApp(t, undefined, { OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '0', OVERLOAD_MAX_EVENT_LOOP_UTILIZATION: '0.5' })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  await new Promise((resolve) => setTimeout(resolve, 300))
  const stopBurst = burst(t, 30, 40) // three quarters busy, with little delay for any one timer
  const shed = await firstShed(() => fetch(`http://127.0.0.1:${port}/api/public`))
  stopBurst()
  t.equal(shed?.status, 503)
  t.match(await shed?.json(), { code: 'overloaded' })
})

t.test('readiness turns 503 when shutdown begins', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer, {}, async (app) => {
    app.get('/slow', async () => new Promise((resolve) => setTimeout(() => resolve('slow'), 300)))
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  await keysLoaded(app)
  const { port } = app.server.address() as { port: number }
  t.equal((await fetch(`http://127.0.0.1:${port}/ready`)).status, 200)
  // A request under way keeps its connection open through close(); one sent on it meanwhile is the load
  // balancer's next probe, answered while the service shuts down.
  const { response } = await new Promise<{ response: string }>((resolve) => {
    let response = ''
    const socket = connect(port, '127.0.0.1', () => socket.write('GET /slow HTTP/1.1\r\nhost: x\r\n\r\n'))
    socket.setEncoding('latin1')
    socket.on('data', (chunk: string) => { response += chunk })
    socket.on('close', () => resolve({ response }))
    setTimeout(() => {
      void app.close()
      setImmediate(() => socket.write('GET /ready HTTP/1.1\r\nhost: x\r\n\r\n'))
    }, 100)
  })
  t.match(response, /^HTTP\/1\.1 200 [^]*HTTP\/1\.1 503 /, 'the request under way is answered, then the probe is 503')
  t.match(response, /"message":"The service is shutting down"/)
})
