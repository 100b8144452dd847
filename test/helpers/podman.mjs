// What the podman tests share (`npm run test:container`, `npm run test:kube`): the pass/fail count they
// print, podman itself, and plain HTTP against the service on the host network (and a free port, which the
// drills take too).
import { execFile } from 'node:child_process'
import http from 'node:http'
import { createServer } from 'node:net'
import { promisify } from 'node:util'

let passed = 0
let failed = 0
export function check (ok, what, detail = '') {
  if (ok) passed++
  else failed++
  console.log(`${ok ? 'ok    ' : 'FAILED'} ${what}${detail ? ` (${detail})` : ''}`)
  return ok
}

/** Prints `N passed, M failed` and sets the exit code: 1 on any failure. */
export function report () {
  console.log(`${passed} passed, ${failed} failed`)
  process.exitCode = failed === 0 ? 0 : 1
}

const exec = promisify(execFile)
export async function podman (...args) {
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

/** `podman build` of the project's Dockerfile; a failed build fails the check and ends the test. */
export async function buildImage (image) {
  const build = await podman('build', '--format', 'docker', '-t', image, '.')
  if (!check(build.code === 0, 'the image builds', build.code === 0 ? '' : build.stderr.slice(-2000))) throw new Error('no image')
}

export async function freePort () {
  const server = createServer()
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address()
  await new Promise((resolve) => server.close(resolve))
  return port
}

/** One GET on a connection of its own; resolves with the status and request id, or with the error. */
export function get (port, path, token) {
  return new Promise((resolve) => {
    const request = http.get({ host: '127.0.0.1', port, path, agent: false, headers: token ? { authorization: `Bearer ${token}` } : {} }, (response) => {
      response.resume()
      response.on('end', () => resolve({ status: response.statusCode, requestId: response.headers['x-request-id'] }))
    })
    request.on('error', (error) => resolve({ error }))
  })
}

export async function waitUntil (predicate, timeoutMs) {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await predicate()) return true
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
  return false
}

/** The three routes with no token, an unscoped token, a read:messages token and a broken one: 200/401/403 as they should. */
export async function checkRoutes (port, plain, scoped) {
  const expectations = [
    ['/api/public', undefined, 200], ['/api/private', undefined, 401], ['/api/private', plain, 200], ['/api/private', `${plain}x`, 401],
    ['/api/private-scoped', plain, 403], ['/api/private-scoped', scoped, 200], ['/health', undefined, 200],
  ]
  const ids = []
  for (const [path, token, status] of expectations) {
    const response = await get(port, path, token)
    check(response.status === status, `${path} ${token ? 'with a token' : 'without a token'} answers ${status}`, `got ${response.status ?? response.error?.code}`)
    ids.push(response.requestId)
  }
  // The id's line is added to the head by Node's own _storeHeader (lib/request-id.ts): checked on the image's Node.
  check(ids.every((id) => /^[A-Za-z0-9_-]{8}-[0-9a-z]+$/.test(id)) && new Set(ids).size === ids.length,
    'every answer carries its own X-Request-Id', ids.join(', '))
}
