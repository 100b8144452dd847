import type { FastifyInstance } from 'fastify'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { setFlagsFromString } from 'node:v8'
import t from 'tap'
import { buildApp } from './helpers/app.js'
import { startServerProcess } from './helpers/process.js'

// Every response over HTTP carries its request's id, however it was written: by Fastify, by a stream, or
// by a route on the raw response. It is always the request's own, the one its log lines carry.

const ID = /^[A-Za-z0-9_-]{8}-[0-9a-z]+$/
const SHARED = { 'content-type': 'text/plain' }

t.test('X-Request-Id on every response, written any way', async (t) => {
  const app = await buildApp(t, undefined, {}, async (routes: FastifyInstance) => {
    routes.get('/own', (_request, reply) => reply.header('x-request-id', 'set-by-route').send('ok'))
    routes.get('/raw/reason', (_request, reply) => { reply.hijack(); reply.raw.writeHead(200, 'Fine', { 'content-type': 'text/plain' }).end('ok') })
    routes.get('/raw/array', (_request, reply) => { reply.hijack(); reply.raw.writeHead(200, ['content-type', 'text/plain']).end('ok') })
    routes.get('/raw/frozen', (_request, reply) => { reply.hijack(); reply.raw.writeHead(200, Object.freeze({ 'content-type': 'text/plain' })).end('ok') })
    routes.get('/raw/implicit', (_request, reply) => { reply.hijack(); reply.raw.end('ok') })
    routes.get('/raw/own', (_request, reply) => { reply.hijack(); reply.raw.setHeader('x-request-id', 'set-by-route'); reply.raw.writeHead(200, ['content-type', 'text/plain']).end('ok') })
    routes.get('/raw/shared', (_request, reply) => { reply.hijack(); reply.raw.writeHead(200, SHARED).end('ok') })
    routes.get('/raw/own-object', (_request, reply) => { reply.hijack(); reply.raw.writeHead(200, { 'x-request-id': 'set-by-route', 'content-type': 'text/plain' }).end('ok') })
    routes.get('/raw/own-array', (_request, reply) => { reply.hijack(); reply.raw.writeHead(200, ['X-Request-Id', 'set-by-route', 'content-type', 'text/plain']).end('ok') })
    routes.get('/raw/own-pairs', (_request, reply) => { reply.hijack(); reply.raw.writeHead(200, [['x-request-id', 'set-by-route'], ['content-type', 'text/plain']]).end('ok') })
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
  const idOf = async (path: string, headers: Record<string, string> = {}) => {
    const response = await fetch(`${base}${path}`, { headers })
    await response.arrayBuffer()
    return response.headers.get('x-request-id')
  }

  const paths = ['/api/public', '/api/private', '/no-such-route', '/docs/static/index.css', '/raw/reason', '/raw/array', '/raw/frozen', '/raw/implicit']
  const ids = await Promise.all(paths.map((path) => idOf(path)))
  paths.forEach((path, i) => t.match(ids[i], ID, `${path}: ours`))
  t.equal(new Set(ids).size, paths.length, 'each request its own')
  for (const path of paths) {
    t.equal(await idOf(path, { 'x-request-id': 'trace-1' }), 'trace-1', `${path}: the caller's, echoed`)
  }
  // fetch joins a repeated header with commas: each of these is one id.
  t.match(await idOf('/own'), ID, 'a route\'s own id gives way to the request\'s')
  for (const path of ['/raw/own', '/raw/own-object', '/raw/own-array', '/raw/own-pairs']) {
    t.match(await idOf(path), ID, `also on the raw response: ${path}`)
  }
  const first = await idOf('/raw/shared')
  t.equal(await idOf('/raw/shared', { 'x-request-id': 'trace-2' }), 'trace-2', 'a header object a route reuses carries no earlier request\'s id')
  const third = await idOf('/raw/shared')
  t.match(third, ID)
  t.not(third, first, 'nor any later')
})

t.test('a refusal leaves its response in the same shape as a 200', async (t) => {
  // Node's response code stays monomorphic only while all responses share one V8 map. Fastify's reply.code()
  // (every refusal, every 404) wrote statusCode before writeHead wrote statusMessage, a 200 the other way
  // round: from the first refusal on, every response went through polymorphic property access.
  setFlagsFromString('--allow-natives-syntax')
  const haveSameMap = new Function('a', 'b', 'return %HaveSameMap(a, b)') as (a: object, b: object) => boolean
  const app = await buildApp(t, undefined)
  const responses = new Map<string | undefined, ServerResponse>()
  app.server.on('request', (request: IncomingMessage, response: ServerResponse) => responses.set(request.url, response))
  await app.listen({ port: 0, host: '127.0.0.1' })
  const base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
  const statuses = []
  for (const path of ['/api/public', '/api/private', '/no-such-route']) {
    const response = await fetch(`${base}${path}`)
    await response.arrayBuffer()
    statuses.push(response.status)
  }
  t.same(statuses, [200, 401, 404])
  t.ok(haveSameMap(responses.get('/api/public')!, responses.get('/api/private')!), 'a 401 like a 200')
  t.ok(haveSameMap(responses.get('/api/public')!, responses.get('/no-such-route')!), 'a 404 like a 200')
})

t.test('a request\'s log lines carry the id its response carries', async (t) => {
  const server = startServerProcess(t, { PORT: '0', LOG_LEVEL: 'debug' })
  const base = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(await server.waitFor(/Server listening/))![1]!
  const idOf = async (headers: Record<string, string> = {}) => {
    const response = await fetch(`${base}/api/public`, { headers })
    await response.arrayBuffer()
    return response.headers.get('x-request-id')!
  }
  for (const id of [await idOf(), await idOf({ 'x-request-id': 'trace-7' })]) {
    t.match(JSON.parse(await server.waitFor(new RegExp(`"reqId":"${id}".*"msg":"incoming request"`))), { reqId: id, req: { url: '/api/public' } })
    t.match(JSON.parse(await server.waitFor(new RegExp(`"reqId":"${id}".*"msg":"request completed"`))), { reqId: id, res: { statusCode: 200 } })
  }
})
