// The container test (`npm run test:container`): builds the image with podman and runs it the way users do,
// `docker run -e ...`, against a local issuer on the host network. Not part of `npm test`: it needs root,
// podman (../shared/tools/container-setup) and minutes. Prints `N passed, M failed`; exits 1 on any failure.
//
// The issuer is the service's own dev issuer (compiled, from dist/): real RSA keys, a JWKS over HTTP on
// 127.0.0.1, and tokens minted in this process.
import { execFile } from 'node:child_process'
import http from 'node:http'
import { createServer } from 'node:net'
import { promisify } from 'node:util'
import { startDevIssuer } from '../dist/lib/dev-issuer.js'

const IMAGE = 'localhost/api-authz:container-test'
const NAME = `api-authz-test-${process.pid}`
const AUDIENCE = 'https://api.container.test'
const GRACE_SECONDS = 10

let passed = 0
let failed = 0
function check (ok, what, detail = '') {
  if (ok) passed++
  else failed++
  console.log(`${ok ? 'ok    ' : 'FAILED'} ${what}${detail ? ` (${detail})` : ''}`)
  return ok
}

const exec = promisify(execFile)
async function podman (...args) {
  try {
    const { stdout, stderr } = await exec('podman', args, { maxBuffer: 64 * 1024 * 1024 })
    return { code: 0, stdout: stdout.trim(), stderr: withoutPodmanNoise(stderr) }
  } catch (error) {
    return { code: error.code ?? 1, stdout: String(error.stdout ?? '').trim(), stderr: withoutPodmanNoise(String(error.stderr ?? '')) }
  }
}

// This machine has no systemd to schedule health checks: podman says so on every run. Not ours.
function withoutPodmanNoise (text) {
  return text.split('\n').filter((line) => line && !line.includes('systemd')).join('\n')
}

async function freePort () {
  const server = createServer()
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address()
  await new Promise((resolve) => server.close(resolve))
  return port
}

/** One GET on a connection of its own; resolves with the status, or with the error. */
function get (port, path, token) {
  return new Promise((resolve) => {
    const request = http.get({ host: '127.0.0.1', port, path, agent: false, headers: token ? { authorization: `Bearer ${token}` } : {} }, (response) => {
      response.resume()
      response.on('end', () => resolve({ status: response.statusCode }))
    })
    request.on('error', (error) => resolve({ error }))
  })
}

async function waitUntil (predicate, timeoutMs) {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await predicate()) return true
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
  return false
}

const issuer = await startDevIssuer(AUDIENCE)
try {
  const build = await podman('build', '--format', 'docker', '-t', IMAGE, '.')
  if (!check(build.code === 0, 'the image builds', build.code === 0 ? '' : build.stderr.slice(-2000))) throw new Error('no image')

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
  const run = await podman('run', '-d', '--name', NAME, '-e', `AUTH0_ISSUER_URL=${issuer.issuer}`, '-e', `AUTH0_AUDIENCE=${AUDIENCE}`, '-e', `PORT=${port}`, IMAGE)
  if (!check(run.code === 0, 'docker run -e ... starts the service', run.stderr)) throw new Error('not running')

  check(await waitUntil(async () => (await get(port, '/ready')).status === 200, 20_000), '/ready turns 200 once the issuer\'s keys are loaded')
  const plain = issuer.mint({}).access_token
  const scoped = issuer.mint({ scope: 'read:messages' }).access_token
  const expectations = [
    ['/api/public', undefined, 200], ['/api/private', undefined, 401], ['/api/private', plain, 200], ['/api/private', `${plain}x`, 401],
    ['/api/private-scoped', plain, 403], ['/api/private-scoped', scoped, 200], ['/health', undefined, 200],
  ]
  for (const [path, token, status] of expectations) {
    const response = await get(port, path, token)
    check(response.status === status, `${path} ${token ? 'with a token' : 'without a token'} answers ${status}`, `got ${response.status ?? response.error?.code}`)
  }

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
  const stopStarted = Date.now()
  const stopped = podman('stop', '--time', String(GRACE_SECONDS), NAME)
  await new Promise((resolve) => setTimeout(resolve, 1500))
  streaming = false
  await Promise.all(stream)
  await stopped
  const stopSeconds = (Date.now() - stopStarted) / 1000
  const exitCode = (await podman('inspect', '--format', '{{.State.ExitCode}}', NAME)).stdout

  const served = outcomes.filter((outcome) => outcome.status === 200).length
  // Each request has a connection of its own, so the only way not to be accepted is a refused connection;
  // a reset, a hang-up or any status but 200 is a request the server dropped.
  const notAccepted = outcomes.filter((outcome) => outcome.error?.code === 'ECONNREFUSED').length
  const failures = outcomes.filter((outcome) => outcome.status !== 200 && outcome.error?.code !== 'ECONNREFUSED')
  check(served > 100, 'the stream was served until the shutdown', `${served} requests answered 200`)
  check(failures.length === 0, 'no request the server had accepted failed during the shutdown',
    `${failures.length} failed: ${failures.slice(0, 3).map((f) => f.status ?? f.error.code).join(', ')}; ${notAccepted} not accepted`)
  check(exitCode === '0', 'the container exited 0 on SIGTERM', `exit ${exitCode}`)
  check(stopSeconds < GRACE_SECONDS, 'within the grace period', `${stopSeconds.toFixed(1)} s of ${GRACE_SECONDS} s`)
  const logs = await podman('logs', NAME)
  check(!logs.stdout.includes(plain.split('.')[2]), 'no token in the container\'s logs')
  check(/"signal":"SIGTERM"/.test(logs.stdout), 'the shutdown is logged')
} catch (error) {
  check(false, 'the container test ran to the end', error.message)
} finally {
  await podman('rm', '--force', NAME)
  await issuer.close()
  console.log(`${passed} passed, ${failed} failed`)
  process.exitCode = failed === 0 ? 0 : 1
}
