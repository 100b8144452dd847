// The container test (`npm run test:container`): builds the image with podman and runs it the way users do,
// `docker run -e ...`, against a local issuer on the host network. Not part of `npm test`: it needs root,
// podman (../shared/tools/container-setup) and minutes. Prints `N passed, M failed`; exits 1 on any failure.
//
// The issuer is the service's own dev issuer (compiled, from dist/): real RSA keys, a JWKS over HTTP on
// 127.0.0.1, and tokens minted in this process. The service reads the key set through a relay here
// (AUTH0_JWKS_URL) that can hold fetches back, so that requests can be kept under way across a shutdown.
import http from 'node:http'
import { startDevIssuer } from '../dist/lib/dev-issuer.js'
import { buildImage, check, checkRoutes, freePort, get, podman, report, waitUntil } from './helpers/podman.mjs'

const IMAGE = 'localhost/api-authz:container-test'
const NAME = `api-authz-test-${process.pid}`
const AUDIENCE = 'https://api.container.test'
const GRACE_SECONDS = 10

const issuer = await startDevIssuer(AUDIENCE)
const HOLD_MS = 2000
let holdingFetches = false
let heldFetches = 0
const relay = http.createServer(async (request, response) => {
  if (holdingFetches) {
    heldFetches++
    await new Promise((resolve) => setTimeout(resolve, HOLD_MS))
  }
  const upstream = await fetch(`${issuer.issuer}.well-known/jwks.json`)
  response.writeHead(upstream.status, { 'content-type': 'application/json' }).end(await upstream.text())
})
await new Promise((resolve) => relay.listen(0, '127.0.0.1', resolve))
const relayUrl = `http://127.0.0.1:${relay.address().port}/jwks`

/** The token with its header's kid changed: the service must fetch the key set before it can refuse it. */
function withUnknownKid (token) {
  const [header, ...rest] = token.split('.')
  const changed = { ...JSON.parse(Buffer.from(header, 'base64url').toString()), kid: 'not-published' }
  return [Buffer.from(JSON.stringify(changed)).toString('base64url'), ...rest].join('.')
}

try {
  await buildImage(IMAGE)

  const [ours, base] = await Promise.all([IMAGE, 'docker.io/library/node:24-bookworm-slim'].map(async (image) =>
    Number((await podman('image', 'inspect', '--format', '{{.Size}}', image)).stdout)))
  console.log(`image size: ${(ours / 1e6).toFixed(0)} MB (base node:24-bookworm-slim ${(base / 1e6).toFixed(0)} MB, +${((ours - base) / 1e6).toFixed(0)} MB)`)

  const user = await podman('image', 'inspect', '--format', '{{.Config.User}}', IMAGE)
  check(user.stdout === 'node', 'the image runs as the node user', user.stdout)

  const unconfigured = await podman('run', '--rm', IMAGE)
  check(unconfigured.code !== 0 && /^Invalid configuration: AUTH0_DOMAIN or AUTH0_ISSUER_URL is required when NODE_ENV=production/.test(unconfigured.stderr),
    'with no issuer the image exits non-zero and the dev issuer never runs', unconfigured.stderr)

  const noAudience = await podman('run', '--rm', '-e', 'AUTH0_DOMAIN=example.eu.auth0.com', IMAGE)
  check(noAudience.code !== 0 && noAudience.stderr === 'Invalid configuration: AUTH0_AUDIENCE is required with AUTH0_DOMAIN: set it to your API identifier',
    'a missing AUTH0_AUDIENCE exits non-zero with one clear line', `exit ${noAudience.code}: ${noAudience.stderr}`)

  const port = await freePort()
  // LOG_LEVEL=debug: Fastify logs every request it reads and every response it finishes, which is how the
  // shutdown check below knows which requests the server had accepted.
  const run = await podman('run', '-d', '--name', NAME, '-e', `AUTH0_ISSUER_URL=${issuer.issuer}`, '-e', `AUTH0_JWKS_URL=${relayUrl}`,
    '-e', `AUTH0_AUDIENCE=${AUDIENCE}`, '-e', `PORT=${port}`, '-e', 'LOG_LEVEL=debug', '-e', 'JWKS_COOLDOWN_MS=1000', IMAGE)
  if (!check(run.code === 0, 'docker run -e ... starts the service', run.stderr)) throw new Error('not running')

  check(await waitUntil(async () => (await get(port, '/ready')).status === 200, 20_000), '/ready turns 200 once the issuer\'s keys are loaded')
  const plain = issuer.mint({}).access_token
  const scoped = issuer.mint({ scope: 'read:messages' }).access_token
  await checkRoutes(port, plain, scoped)

  const uid = await podman('exec', NAME, 'id', '-u')
  check(uid.stdout !== '' && uid.stdout !== '0', 'the process runs as non-root', `uid ${uid.stdout}`)
  const pid1 = await podman('exec', NAME, 'cat', '/proc/1/cmdline')
  check(pid1.stdout.replaceAll('\0', ' ').trim() === 'node dist/server.js', 'node itself is PID 1, so it gets SIGTERM', pid1.stdout.replaceAll('\0', ' '))
  const health = await podman('healthcheck', 'run', NAME)
  check(health.code === 0, 'the image\'s HEALTHCHECK passes', health.stderr)

  // SIGTERM in the middle of a steady stream of requests: nothing accepted may fail.
  const outcomes = []
  let streaming = true
  const stream = Array.from({ length: 8 }, async () => {
    while (streaming) outcomes.push(await get(port, '/api/private', plain))
  })
  await new Promise((resolve) => setTimeout(resolve, 1000))
  // And requests certainly under way at SIGTERM: each makes the service fetch the key set, which the relay
  // holds for HOLD_MS, so they are still being handled when the signal arrives.
  holdingFetches = true
  const underWay = Array.from({ length: 4 }, () => get(port, '/api/private', withUnknownKid(plain)))
  const heldInTime = await waitUntil(async () => heldFetches > 0, 3000)
  const stopStarted = Date.now()
  const stopped = podman('stop', '--time', String(GRACE_SECONDS), NAME)
  await new Promise((resolve) => setTimeout(resolve, 1500))
  streaming = false
  await Promise.all(stream)
  await stopped
  const stopSeconds = (Date.now() - stopStarted) / 1000
  const exitCode = (await podman('inspect', '--format', '{{.State.ExitCode}}', NAME)).stdout
  const underWayOutcomes = await Promise.all(underWay)
  check(heldInTime && underWayOutcomes.every((outcome) => outcome.status === 401),
    'requests under way at SIGTERM are finished (a 401 once their key set arrives), not dropped',
    underWayOutcomes.map((outcome) => outcome.status ?? outcome.error.code).join(', '))

  const logs = await podman('logs', NAME)
  const served = outcomes.filter((outcome) => outcome.status === 200).length
  // From the client: every answer is a 200, and a connection the server never served is refused or reset
  // (when the listener closes, the kernel resets connections still waiting in its backlog).
  const notServed = outcomes.filter((outcome) => outcome.error?.code === 'ECONNREFUSED' || outcome.error?.code === 'ECONNRESET').length
  const failures = outcomes.filter((outcome) => outcome.status !== 200 && outcome.error?.code !== 'ECONNREFUSED' && outcome.error?.code !== 'ECONNRESET')
  // From the server: every request it read was answered.
  const requests = logs.stdout.split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line))
  const read = new Set(requests.filter((entry) => entry.msg === 'incoming request').map((entry) => entry.reqId))
  const answered = new Set(requests.filter((entry) => entry.msg === 'request completed').map((entry) => entry.reqId))
  const dropped = [...read].filter((id) => !answered.has(id))
  check(served > 100, 'the stream was served until the shutdown', `${served} requests answered 200`)
  check(failures.length === 0 && dropped.length === 0 && answered.size >= served,
    'no request the server had accepted failed during the shutdown',
    `${read.size} read, ${dropped.length} not answered; client saw ${failures.length} failures (${failures.slice(0, 3).map((f) => f.status ?? f.error.code).join(', ')}), ${notServed} connections not served`)
  check(exitCode === '0', 'the container exited 0 on SIGTERM', `exit ${exitCode}`)
  check(stopSeconds < GRACE_SECONDS, 'within the grace period', `${stopSeconds.toFixed(1)} s of ${GRACE_SECONDS} s`)
  check(!logs.stdout.includes(plain.split('.')[2]), 'no token in the container\'s logs')
  check(/"signal":"SIGTERM"/.test(logs.stdout), 'the shutdown is logged')
} catch (error) {
  check(false, 'the container test ran to the end', error.message)
} finally {
  await podman('rm', '--force', NAME)
  relay.closeAllConnections()
  relay.close()
  await issuer.close()
  report()
}
