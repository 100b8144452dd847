import t from 'tap'
import { bearer, startIssuer } from './helpers/app.js'
import { AUDIENCE } from './helpers/issuer.js'
import { startServerProcess } from './helpers/process.js'

const LISTENING = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/
// Every test here starts service processes: about 28 s in all on a slowed host, past tap's 30 s default.
t.setTimeout(120_000)

t.test('a configuration mistake is one line on stderr and a non-zero exit, before listening', async (t) => {
  const cases: [Record<string, string>, RegExp][] = [
    [{ NODE_ENV: 'production' }, /^Invalid configuration: AUTH0_DOMAIN or AUTH0_ISSUER_URL is required when NODE_ENV=production/],
    [{ NODE_ENV: 'production', AUTH0_DOMAIN: 'tenant.auth0.com' }, /^Invalid configuration: AUTH0_AUDIENCE is required/],
    [{ PORT: 'eighty' }, /^Invalid configuration: PORT must be integer\n$/],
  ]
  for (const [env, message] of cases) {
    const server = startServerProcess(t, env)
    t.equal(await server.exited, 1, JSON.stringify(env))
    t.equal(server.stderr().trim().split('\n').length, 1, 'one line')
    t.match(server.stderr(), message)
    t.notMatch(server.stdout(), /listening/)
  }
})

t.test('configured from the environment: serves, never logs a token, and shuts down gracefully', async (t) => {
  const issuer = await startIssuer(t)
  const server = startServerProcess(t, {
    AUTH0_ISSUER_URL: issuer.url,
    AUTH0_AUDIENCE: AUDIENCE,
    PORT: '0',
    LOG_LEVEL: 'trace',
    JWKS_TIMEOUT_MS: '2000',
    JWKS_COOLDOWN_MS: '1000',
  })
  const base = LISTENING.exec(await server.waitFor(LISTENING))![1]!
  const token = issuer.token({ scope: 'read:messages' })

  t.equal((await fetch(`${base}/api/private-scoped`, { headers: bearer(token) })).status, 200)
  t.equal((await fetch(`${base}/api/private`, { headers: bearer(`${token}x`) })).status, 401)
  t.equal((await fetch(`${base}/ready`)).status, 200)

  // A request still waiting on the (now hanging) issuer when SIGTERM arrives gets its answer.
  await new Promise((resolve) => setTimeout(resolve, 1000)) // past the cooldown: a new kid fetches the key set
  issuer.mode = 'hang'
  const inFlight = fetch(`${base}/api/private`, { headers: bearer(issuer.token({}, issuer.rotate())) })
  await new Promise((resolve) => setTimeout(resolve, 300))
  server.kill('SIGTERM')
  const answered = await inFlight
  t.equal(answered.status, 503, 'the request under way was answered, not dropped')
  t.equal(await server.exited, 0, 'exit 0 after a graceful shutdown')
  await t.rejects(fetch(`${base}/api/public`), 'no longer accepting connections')

  const logs = server.stdout()
  t.match(logs, /"signal":"SIGTERM".*shutting down/)
  t.match(logs, /"url":"\/api\/private-scoped"/, 'requests are logged')
  t.notMatch(logs, token.split('.')[2]!, 'no token reaches the logs')
  for (const line of logs.trim().split('\n')) {
    t.doesNotThrow(() => JSON.parse(line), 'JSON logs')
  }
})

t.test('with nothing configured, the dev issuer runs and the start log shows how to use it', async (t) => {
  const server = startServerProcess(t, { PORT: '0' })
  const banner = JSON.parse(await server.waitFor(/DEV ISSUER ON/)) as { level: number, msg: string }
  t.equal(banner.level, 40, 'logged as a warning')
  const base = /curl -s (http:\/\/localhost:\d+)\/api\/public/.exec(banner.msg)?.[1]
  t.ok(base, 'a copy-paste curl for the public route')
  t.match(banner.msg, /TOKEN=\$\(curl -s -X POST http:\/\/localhost:\d+\/dev\/token/)
  t.match(banner.msg, /\/api\/private -H "Authorization: Bearer \$TOKEN"/)
  t.match(banner.msg, /"scope":"read:messages".*\n.*\/api\/private-scoped -H "Authorization: Bearer \$SCOPED"/)
  t.equal((await fetch(`${base}/api/public`)).status, 200)
  server.kill('SIGINT')
  t.equal(await server.exited, 0)
})
