// What every drill stands on: the compiled service as a child process, a controllable issuer with real
// keys, the open-loop load generator (drills/load.mjs, a process of its own), raw sockets, and the
// capacity calibration. Everything listens on and connects to 127.0.0.1 only, and every process started
// here is killed when this one exits, however it exits.
import { execFileSync, fork, spawn } from 'node:child_process'
import { createPrivateKey, generateKeyPairSync, randomBytes, randomUUID, sign } from 'node:crypto'
import { once } from 'node:events'
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads'
import { mkdtempSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { createServer } from 'node:http'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort } from '../test/helpers/podman.mjs'

export const ROOT = join(import.meta.dirname, '..')
export const AUDIENCE = 'https://api.drills.test'
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const children = new Set()
if (isMainThread) {
  process.on('exit', () => children.forEach((child) => child.kill('SIGKILL')))
  for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(1))
}

/** Builds dist/ when a TypeScript source is newer than dist/server.js (npm test and npm run soak build first). */
export function ensureBuilt () {
  const built = statSync(join(ROOT, 'dist', 'server.js'), { throwIfNoEntry: false })?.mtimeMs ?? 0
  const sources = ['app.ts', 'server.ts', ...['lib', 'plugins', 'routes'].flatMap((dir) =>
    readdirSync(join(ROOT, dir), { recursive: true }).filter((file) => file.endsWith('.ts')).map((file) => join(dir, file)))]
  if (sources.some((file) => statSync(join(ROOT, file)).mtimeMs > built)) {
    execFileSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'ignore' })
  }
}

// ---------------------------------------------------------------------------------------------------------
// The issuer

/**
 * A real issuer on 127.0.0.1: real RSA and EC keys, tokens signed with node:crypto, and a JWKS endpoint
 * that can be switched between behaviours while it counts what reaches it. `mode`: `ok`, `500`, `hang`
 * (never answers), `garbage` (200, not JSON), `empty` (a key set with no key), `oversized` (a 2 MB
 * document); `delayMs` holds any answer back (`ok` with a delay is a slow issuer).
 */
export class DrillIssuer {
  mode = 'ok'
  delayMs = 0
  /** Requests of the key set, TCP connections ever opened, and the most open, or unanswered, at once. */
  jwksRequests = 0
  connections = 0
  maxOpenConnections = 0
  maxInFlight = 0
  #open = 0
  #inFlight = 0
  /** The published keys, newest first; tokens are signed with the first of the requested algorithm. */
  keys = []
  #server = createServer((request, response) => this.#answer(request, response))
  #sockets = new Set()

  static async start ({ algorithms = ['RS256', 'ES256', 'ES384'] } = {}) {
    const issuer = new DrillIssuer()
    for (const alg of algorithms) issuer.rotate(alg)
    issuer.#server.on('connection', (socket) => {
      issuer.connections++
      issuer.maxOpenConnections = Math.max(issuer.maxOpenConnections, ++issuer.#open)
      issuer.#sockets.add(socket)
      socket.on('close', () => {
        issuer.#open--
        issuer.#sockets.delete(socket)
      })
    })
    issuer.#server.listen(0, '127.0.0.1')
    await once(issuer.#server, 'listening')
    issuer.url = `http://127.0.0.1:${issuer.#server.address().port}/`
    return issuer
  }

  get jwksUrl () {
    return `${this.url}.well-known/jwks.json`
  }

  /** Publishes a new key (newest first) and returns it. */
  rotate (alg = 'RS256') {
    const { privateKey, publicKey } = CURVES[alg] === undefined
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : generateKeyPairSync('ec', { namedCurve: CURVES[alg] })
    const key = { kid: randomUUID(), alg, privateKey, jwk: { ...publicKey.export({ format: 'jwk' }), alg, use: 'sig' } }
    key.jwk.kid = key.kid
    this.keys.unshift(key)
    return key
  }

  key (alg = 'RS256') {
    return this.keys.find((key) => key.alg === alg)
  }

  /** A valid access token (an hour long), signed by `key`. */
  token (claims = {}, key = this.key()) {
    const now = Math.floor(Date.now() / 1000)
    return signToken({ kid: key.kid, alg: key.alg }, { iss: this.url, sub: 'drill', aud: AUDIENCE, iat: now, exp: now + 3600, ...claims }, key)
  }

  /** `count` distinct valid tokens (ES256 by default: a tenth of an RSA signature's cost to make). */
  tokens (count, key = this.key('ES256')) {
    return Array.from({ length: count }, (_, i) => this.token({ sub: `user-${i}`, jti: randomUUID() }, key))
  }

  /** The same, made by two worker threads (for keys slow to sign with, such as ES384's). */
  async tokensInParallel (count, key) {
    const half = Math.ceil(count / 2)
    const parts = await Promise.all([0, 1].map(async (part) => {
      const worker = new Worker(new URL(import.meta.url), {
        workerData: { count: Math.min(half, count - part * half), offset: part * half, kid: key.kid, alg: key.alg, pem: key.privateKey.export({ type: 'pkcs8', format: 'pem' }), iss: this.url },
      })
      const [tokens] = await once(worker, 'message')
      return tokens
    }))
    return parts.flat()
  }

  /** Fresh counters for the next measurement. */
  resetCounters () {
    this.jwksRequests = 0
    this.connections = this.#open
    this.maxOpenConnections = this.#open
    this.maxInFlight = this.#inFlight
  }

  async close () {
    for (const socket of this.#sockets) socket.destroy()
    await new Promise((resolve) => this.#server.close(resolve))
  }

  #answer (request, response) {
    if (request.url !== '/.well-known/jwks.json') {
      response.writeHead(404).end()
      return
    }
    this.jwksRequests++
    this.maxInFlight = Math.max(this.maxInFlight, ++this.#inFlight)
    response.on('close', () => this.#inFlight--)
    const { mode } = this
    if (mode === 'hang') return // held until the client gives up or the issuer closes
    // As a real issuer, the answer is what it had when the request arrived.
    const [status, body] = this.#document(mode)
    setTimeout(() => response.writeHead(status, { 'content-type': 'application/json' }).end(body), this.delayMs)
  }

  #document (mode) {
    const keys = this.keys.map((key) => key.jwk)
    switch (mode) {
      case 'ok': return [200, JSON.stringify({ keys })]
      case '500': return [500, '{"error":"internal"}']
      case 'garbage': return [200, '<html>maintenance</html>']
      case 'empty': return [200, '{"keys":[]}']
      case 'oversized': return [200, JSON.stringify({ keys, padding: 'x'.repeat(2 * 1024 * 1024) })]
      default: throw new Error(`unknown issuer mode ${mode}`)
    }
  }
}

const CURVES = { ES256: 'P-256', ES384: 'P-384' }

function signToken (header, payload, key) {
  const input = `${segment({ typ: 'JWT', ...header })}.${segment(payload)}`
  const signature = CURVES[key.alg] === undefined
    ? sign('sha256', Buffer.from(input), key.privateKey)
    : sign(`sha${key.alg.slice(2)}`, Buffer.from(input), { key: key.privateKey, dsaEncoding: 'ieee-p1363' })
  return `${input}.${signature.toString('base64url')}`
}


const segment = (value) => Buffer.from(JSON.stringify(value)).toString('base64url')

/**
 * Replaced by the load generator with a counter (12 base64url characters encoding nine digits), so that
 * every request it sends is different: see `junkToken`.
 */
export const MARK = '@@@@@@@@@@@@'

/**
 * A token that looks real (a JWT of the usual size) but is signed by no key the issuer has. `kid` is the
 * key it names; `distinct: 'kid'` puts MARK where the kid's last nine digits are encoded (they start at a
 * multiple of three bytes, so that they are whole base64url characters), `distinct: 'signature'` puts it
 * in the signature: with the generator's `unique`, every request then names a new kid, or is a new token.
 */
export function junkToken (issuer, { kid = randomUUID(), distinct } = {}) {
  let header = JSON.stringify({ typ: 'JWT', alg: 'RS256', kid })
  let encoded = segment(JSON.parse(header))
  if (distinct === 'kid') {
    let prefix = kid
    do {
      header = JSON.stringify({ typ: 'JWT', alg: 'RS256', kid: `${prefix}000000000` })
      prefix += '-'
    } while (header.indexOf('000000000') % 3 !== 0)
    encoded = Buffer.from(header).toString('base64url')
    const at = header.indexOf('000000000') / 3 * 4
    encoded = `${encoded.slice(0, at)}${MARK}${encoded.slice(at + MARK.length)}`
  }
  const now = Math.floor(Date.now() / 1000)
  const signature = randomBytes(256).toString('base64url')
  return `${encoded}.${segment({ iss: issuer.url, sub: 'junk', aud: AUDIENCE, iat: now, exp: now + 3600 })}.${distinct === 'signature' ? `${MARK}${signature.slice(MARK.length)}` : signature}`
}

/** One HTTP/1.1 request as the generator sends it. */
export function request (path, token) {
  return `GET ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\n${token === undefined ? '' : `authorization: Bearer ${token}\r\n`}\r\n`
}

/** `a` and `b` interleaved, one of each in turn, as long as the longer one. */
export function interleave (a, b) {
  return Array.from({ length: 2 * Math.max(a.length, b.length) }, (_, i) => (i % 2 === 0 ? a : b)[(i >> 1) % (i % 2 === 0 ? a : b).length])
}

// ---------------------------------------------------------------------------------------------------------
// The service

/**
 * Starts `node dist/server.js` as production runs it (NODE_ENV=production, LOG_LEVEL=warn) against
 * `issuer`; the local issuer is plain http, which production accepts only on loopback and only as a
 * configured AUTH0_JWKS_URL. Resolves once `waitFor` answers 200 (`/ready`: keys loaded; `/health`: listening).
 * The working directory is an empty one, so that no local .env is read.
 */
export async function startService (issuer, env = {}, { waitFor = '/ready' } = {}) {
  const [port, metricsPort] = [await freePort(), await freePort()]
  const child = spawn(process.execPath, [join(ROOT, 'dist', 'server.js')], {
    cwd: mkdtempSync(join(tmpdir(), 'drill-')),
    env: {
      PATH: process.env.PATH,
      NODE_ENV: 'production',
      LOG_LEVEL: 'warn',
      HOST: '127.0.0.1',
      PORT: String(port),
      METRICS_PORT: String(metricsPort),
      AUTH0_ISSUER_URL: issuer.url,
      AUTH0_JWKS_URL: issuer.jwksUrl,
      AUTH0_AUDIENCE: AUDIENCE,
      AUTH0_ALGORITHMS: 'RS256,ES256,ES384',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  children.add(child)
  let output = ''
  const keep = (chunk) => { output = (output + chunk).slice(-20_000) }
  child.stdout.setEncoding('utf8').on('data', keep)
  child.stderr.setEncoding('utf8').on('data', keep)
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => {
    children.delete(child)
    resolve(code ?? signal)
  }))
  const service = {
    port,
    metricsPort,
    pid: child.pid,
    output: () => output,
    url: (path) => `http://127.0.0.1:${port}${path}`,
    exited,
    /** Resident memory, from /proc. */
    rssBytes: () => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))[1]) * 1024,
    /** The Prometheus text of the metrics listener, or undefined while the service has none. */
    metrics: async () => {
      const response = await fetch(`http://127.0.0.1:${metricsPort}/metrics`, { signal: AbortSignal.timeout(2000) }).catch(() => undefined)
      return response?.ok ? response.text() : undefined
    },
    async stop () {
      if (child.exitCode !== null || child.signalCode !== null) return exited
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(timer)
    },
  }
  for (const started = Date.now(); Date.now() - started < 20_000;) {
    if (child.exitCode !== null) break
    const answer = await fetch(service.url(waitFor), { signal: AbortSignal.timeout(1000) }).catch(() => undefined)
    if (answer?.ok) return service
    await sleep(50)
  }
  await service.stop()
  throw new Error(`the service did not answer ${waitFor} 200:\n${output}`)
}

/** A metric's value from Prometheus text (the first sample of that name), or undefined. */
export function metricValue (text, name) {
  const match = text === undefined ? null : new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)
  return match === null ? undefined : Number(match[1])
}

// ---------------------------------------------------------------------------------------------------------
// Load

/** The open-loop generator of drills/load.mjs in a process of its own, with no test-runner hooks. */
export class Load {
  #child
  #waiting = new Map()
  #nextId = 0

  static start () {
    const load = new Load()
    load.#child = fork(join(import.meta.dirname, 'load.mjs'), [], { execArgv: [], env: { PATH: process.env.PATH }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    children.add(load.#child)
    load.#child.on('message', ({ id, ...result }) => {
      load.#waiting.get(id)?.(result)
      load.#waiting.delete(id)
    })
    return load
  }

  #ask (message) {
    const id = this.#nextId++
    return new Promise((resolve) => {
      this.#waiting.set(id, resolve)
      this.#child.send({ id, ...message })
    })
  }

  /** Requests (raw HTTP text) cycled through, in order, by the next runs. */
  prepare (requests) {
    return this.#ask({ type: 'prepare', requests })
  }

  /** One open-loop run: { port, rate, durationMs, count?, connections?, maxConnections?, timeoutMs?, requests?, unique?, varyScheme? }. */
  run (options) {
    return this.#ask({ type: 'run', ...options })
  }

  stop () {
    this.#child.kill()
  }
}

/** Answers that were not 2xx, and requests lost (never sent in time, unanswered, or cut by a socket error). */
export function tally (result) {
  const ok = Object.entries(result.statuses).reduce((sum, [status, count]) => sum + (status.startsWith('2') ? count : 0), 0)
  return { ok, non2xx: result.answered - ok, lost: result.unsent + result.timeouts + result.errors }
}

/**
 * Capacity C: the highest open-loop rate of the prepared requests whose p99 stays under `p99Ms` with every
 * answer a 2xx and nothing lost. Doubles the rate until a step fails, then halves the gap three times.
 * A step is three short runs judged by the median one: on a shared machine a neighbour's burst can spoil
 * any one run's p99, and C must not fall with it.
 */
export async function calibrate (load, service, { p99Ms = 50, runMs = 800, start = 200, maxRate = 40_000 } = {}) {
  const steps = []
  const step = async (rate) => {
    const runs = []
    for (let i = 0; i < 3; i++) {
      const result = await load.run({ port: service.port, rate, durationMs: runMs, connections: 32, maxConnections: 256, timeoutMs: 1000, varyScheme: true })
      const { non2xx, lost } = tally(result)
      runs.push({ p99: result.p99, good: result.p99 < p99Ms && non2xx === 0 && lost === 0 })
      await sleep(200) // let the queue drain between runs
    }
    const good = runs.filter((run) => run.good).length >= 2
    steps.push({ rate, p99s: runs.map((run) => run.p99), good })
    return good
  }
  await load.run({ port: service.port, rate: start, durationMs: 1000, varyScheme: true }) // warm-up: the JIT, the connections
  let good = 0
  let bad = start
  while (bad <= maxRate && await step(bad)) {
    good = bad
    bad *= 2
  }
  for (let i = 0; i < 3 && good > 0; i++) {
    const middle = Math.round((good + bad) / 2)
    if (await step(middle)) good = middle
    else bad = middle
  }
  return { capacity: good, steps }
}

// ---------------------------------------------------------------------------------------------------------
// Raw sockets

/**
 * Writes `chunks` to a new connection (a string, or strings written `gapMs` apart) and resolves with all
 * that was read until the server closed it (or `timeoutMs` passed), and when it closed.
 */
export function exchange (port, chunks, { gapMs = 0, timeoutMs = 10_000 } = {}) {
  return new Promise((resolve) => {
    const started = Date.now()
    let response = ''
    let timer
    const socket = connect(port, '127.0.0.1', async () => {
      for (const chunk of [chunks].flat()) {
        if (socket.destroyed) break
        socket.write(chunk)
        if (gapMs > 0) await sleep(gapMs)
      }
    })
    socket.setEncoding('latin1')
    socket.on('data', (chunk) => { response += chunk })
    socket.on('error', () => {})
    socket.on('close', () => {
      clearTimeout(timer)
      resolve({ response, closedAfterMs: Date.now() - started, closedByServer: !timedOut })
    })
    let timedOut = false
    timer = setTimeout(() => {
      timedOut = true
      socket.destroy()
    }, timeoutMs)
  })
}

/** The status codes of the responses in `text`, in order. */
export const statuses = (text) => [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((match) => Number(match[1]))

// In a worker thread started by tokensInParallel: make its share of the tokens and hand them back.
if (!isMainThread && workerData?.pem !== undefined) {
  const { count, offset, kid, alg, pem, iss } = workerData
  const key = { kid, alg, privateKey: createPrivateKey(pem) }
  const now = Math.floor(Date.now() / 1000)
  parentPort.postMessage(Array.from({ length: count }, (_, i) =>
    signToken({ kid, alg }, { iss, sub: `user-${offset + i}`, aud: AUDIENCE, iat: now, exp: now + 3600, jti: randomUUID() }, key)))
}
