import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { ConfigError, DEV_AUDIENCE, loadConfig } from '../lib/config.js'

t.test('defaults: the dev issuer, on 127.0.0.1:3000', async (t) => {
  t.same(loadConfig({}), {
    production: false,
    issuers: [],
    jwksUrl: undefined,
    audiences: [DEV_AUDIENCE],
    algorithms: ['RS256'],
    clockToleranceSec: 5,
    tokenProfile: 'auth0',
    maxTokenAgeSec: undefined,
    allowedClients: [],
    dpop: { mode: 'allowed', algorithms: ['ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512', 'RS256', 'EdDSA'], maxAgeSec: 60, replayCapacity: 250_000 },
    jwksTimeoutMs: 5000,
    jwksCooldownMs: 30_000,
    jwksMaxAgeMs: 600_000,
    port: 3000,
    host: '127.0.0.1',
    corsOrigins: [],
    logLevel: 'info',
    shutdownTimeoutMs: 10_000,
    headersTimeoutMs: 10_000,
    requestTimeoutMs: 30_000,
    keepAliveTimeoutMs: 72_000,
    maxHeaderSize: 16_384,
    maxTokenLength: 8192,
    overload: { maxEventLoopDelayMs: 15, maxEventLoopUtilization: 0, retryAfterSec: 2 },
    metricsPort: 9464,
    metricsRequestDuration: false,
    accessLog: false,
    docs: true,
    publicUrl: undefined,
    trustProxy: false,
    resourceName: undefined,
    proxy: { httpsProxy: undefined, httpProxy: undefined, noProxy: undefined },
  })
})

t.test('an Auth0 domain becomes its https issuer', async (t) => {
  const config = loadConfig({ AUTH0_DOMAIN: 'Example.EU.auth0.com', AUTH0_AUDIENCE: 'https://api.example.com, urn:other ' })
  t.same(config.issuers, ['https://example.eu.auth0.com/'])
  t.same(config.audiences, ['https://api.example.com', 'urn:other'])
  t.same(loadConfig({ AUTH0_DOMAIN: 'auth.internal:8443', AUTH0_AUDIENCE: 'a' }).issuers, ['https://auth.internal:8443/'], 'with a port')
  for (const host of ['localhost', '::1', '127.0.0.2']) {
    t.equal(loadConfig({ HOST: host }).host, host, `the dev issuer runs on ${host}`)
  }
  t.equal(loadConfig({ HOST: 'api.internal', AUTH0_DOMAIN: 'a.auth0.com', AUTH0_AUDIENCE: 'a' }).host, 'api.internal')
})

t.test('an issuer URL is kept exactly, as tokens state it', async (t) => {
  t.same(loadConfig({ AUTH0_ISSUER_URL: 'https://login.example.com/realms/main', AUTH0_AUDIENCE: 'a' }).issuers, ['https://login.example.com/realms/main'])
  t.same(loadConfig({ AUTH0_ISSUER_URL: 'https://accounts.google.com', AUTH0_AUDIENCE: 'a' }).issuers, ['https://accounts.google.com'])
  t.same(loadConfig({ AUTH0_ISSUER_URL: 'http://127.0.0.1:9000/', AUTH0_AUDIENCE: 'a', NODE_ENV: 'production' }).issuers, ['http://127.0.0.1:9000/'], 'a loopback http issuer is fine in production')
  t.same(loadConfig({ AUTH0_ISSUER_URL: 'http://localhost:9000', AUTH0_AUDIENCE: 'a', NODE_ENV: 'production' }).issuers, ['http://localhost:9000'])
})

t.test('every variable is read and converted', async (t) => {
  const config = loadConfig({
    NODE_ENV: 'production',
    AUTH0_DOMAIN: 'tenant.auth0.com',
    AUTH0_AUDIENCE: 'api',
    AUTH0_JWKS_URL: 'https://keys.example.com/certs',
    AUTH0_ALGORITHMS: 'RS256,PS256, ES256',
    AUTH0_CLOCK_TOLERANCE: '0',
    JWKS_TIMEOUT_MS: '2500',
    JWKS_COOLDOWN_MS: '1000',
    JWKS_MAX_AGE_MS: '60000',
    PORT: '8080',
    HOST: '0.0.0.0',
    CORS_ORIGINS: 'https://app.example.com,http://localhost:5173',
    LOG_LEVEL: 'warn',
    SHUTDOWN_TIMEOUT_MS: '20000',
    AUTH0_TOKEN_PROFILE: 'rfc9068',
    AUTH0_MAX_TOKEN_AGE: '3600',
    AUTH0_ALLOWED_CLIENTS: 'client-a, client-b',
    AUTH0_DPOP: 'required',
    AUTH0_DPOP_ALGORITHMS: 'ES256,EdDSA',
    AUTH0_DPOP_MAX_AGE: '30',
    AUTH0_DPOP_REPLAY_CAPACITY: '50000',
    PUBLIC_URL: 'https://api.example.com/v1',
    TRUST_PROXY: '10.0.0.0/8, loopback, ::1',
    HEADERS_TIMEOUT_MS: '5000',
    REQUEST_TIMEOUT_MS: '20000',
    KEEP_ALIVE_TIMEOUT_MS: '65000',
    MAX_HEADER_SIZE: '32768',
    AUTH0_MAX_TOKEN_LENGTH: '16384',
    OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '250',
    OVERLOAD_MAX_EVENT_LOOP_UTILIZATION: '0.95',
    OVERLOAD_RETRY_AFTER_SEC: '5',
    METRICS_PORT: 'off',
    METRICS_REQUEST_DURATION: 'true',
    ACCESS_LOG: 'true',
    DOCS: 'true',
    RESOURCE_NAME: 'Example API',
    HTTPS_PROXY: 'http://user:secret@proxy.internal:3128',
    http_proxy: 'http://proxy.internal:3128',
    NO_PROXY: 'localhost,.internal',
    UNRELATED: 'ignored',
  })
  t.same(config, {
    production: true,
    issuers: ['https://tenant.auth0.com/'],
    jwksUrl: 'https://keys.example.com/certs',
    audiences: ['api'],
    algorithms: ['RS256', 'PS256', 'ES256'],
    clockToleranceSec: 0,
    tokenProfile: 'rfc9068',
    maxTokenAgeSec: 3600,
    allowedClients: ['client-a', 'client-b'],
    dpop: { mode: 'required', algorithms: ['ES256', 'EdDSA'], maxAgeSec: 30, replayCapacity: 50_000 },
    jwksTimeoutMs: 2500,
    jwksCooldownMs: 1000,
    jwksMaxAgeMs: 60_000,
    port: 8080,
    host: '0.0.0.0',
    corsOrigins: ['https://app.example.com', 'http://localhost:5173'],
    logLevel: 'warn',
    shutdownTimeoutMs: 20_000,
    headersTimeoutMs: 5000,
    requestTimeoutMs: 20_000,
    keepAliveTimeoutMs: 65_000,
    maxHeaderSize: 32_768,
    maxTokenLength: 16_384,
    overload: { maxEventLoopDelayMs: 250, maxEventLoopUtilization: 0.95, retryAfterSec: 5 },
    metricsPort: undefined,
    metricsRequestDuration: true,
    accessLog: true,
    docs: true,
    publicUrl: 'https://api.example.com/v1',
    trustProxy: ['10.0.0.0/8', 'loopback', '::1'],
    resourceName: 'Example API',
    proxy: { httpsProxy: 'http://user:secret@proxy.internal:3128', httpProxy: 'http://proxy.internal:3128', noProxy: 'localhost,.internal' },
  })
})

t.test('several issuers: comma lists of domains or issuer URLs', async (t) => {
  t.same(loadConfig({ AUTH0_DOMAIN: 'login.example.com, example.eu.auth0.com', AUTH0_AUDIENCE: 'a' }).issuers, ['https://login.example.com/', 'https://example.eu.auth0.com/'])
  t.same(loadConfig({ AUTH0_ISSUER_URL: 'https://a.example/,https://sso.example/realms/main', AUTH0_AUDIENCE: 'a' }).issuers, ['https://a.example/', 'https://sso.example/realms/main'])
  t.equal(loadConfig({ PUBLIC_URL: 'http://localhost:3000' }).publicUrl, 'http://localhost:3000', 'PUBLIC_URL is kept exactly; loopback http outside production')
  t.equal(loadConfig({ https_proxy: 'http://lower.internal:3128', HTTPS_PROXY: 'http://upper.internal:3128' }).proxy.httpsProxy, 'http://lower.internal:3128', 'lower case wins, as in undici and curl')
  t.equal(loadConfig({ TRUST_PROXY: 'true' }).trustProxy, true, 'TRUST_PROXY=true believes any peer')
  t.same(loadConfig({ TRUST_PROXY: 'fd00::/8' }).trustProxy, ['fd00::/8'])
  t.equal(loadConfig({ METRICS_PORT: '0', PORT: '0' }).metricsPort, 0, 'any free port, even beside PORT=0')
  t.equal(loadConfig({ NODE_ENV: 'production', AUTH0_DOMAIN: 'a.auth0.com', AUTH0_AUDIENCE: 'a' }).docs, false, 'no docs in production unless DOCS=true')
})

t.test('empty values count as unset', async (t) => {
  const config = loadConfig({ PORT: '', AUTH0_DOMAIN: ' ', LOG_LEVEL: '' })
  t.equal(config.port, 3000)
  t.same(config.issuers, [])
})

t.test('a .env file is read, and the environment wins over it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'config-'))
  const path = join(dir, '.env')
  writeFileSync(path, 'AUTH0_DOMAIN=from-file.auth0.com\nAUTH0_AUDIENCE=file-api\nPORT=4000\n')
  const config = loadConfig({ PORT: '5000' }, { dotenvPath: path })
  t.same(config.issuers, ['https://from-file.auth0.com/'])
  t.same(config.audiences, ['file-api'])
  t.equal(config.port, 5000)
  t.equal(loadConfig({}, { dotenvPath: join(dir, 'missing.env') }).port, 3000, 'a missing .env file is fine')
  t.throws(() => loadConfig({}, { dotenvPath: dir }), { name: 'ConfigError', message: `${dir} cannot be read: EISDIR` }, 'an unreadable one is a ConfigError')
  writeFileSync(path, 'PORT=\nAUTH0_DOMAIN=from-file.auth0.com\nAUTH0_AUDIENCE=file-api\n')
  t.equal(loadConfig({}, { dotenvPath: path }).port, 3000, 'empty values in the file count as unset too')
  t.same(loadConfig({ AUTH0_DOMAIN: '' }, { dotenvPath: path }).issuers, ['https://from-file.auth0.com/'], 'an empty variable does not hide the file\'s value')
})

t.test('each mistake is one line naming the variable', async (t) => {
  const mistakes: [Record<string, string>, RegExp][] = [
    [{ NODE_ENV: 'production' }, /^AUTH0_DOMAIN or AUTH0_ISSUER_URL is required when NODE_ENV=production/],
    [{ NODE_ENV: 'production', AUTH0_DOMAIN: 'x.auth0.com' }, /^AUTH0_AUDIENCE is required with AUTH0_DOMAIN/],
    [{ AUTH0_ISSUER_URL: 'https://x.example/' }, /^AUTH0_AUDIENCE is required with AUTH0_ISSUER_URL/],
    [{ AUTH0_DOMAIN: 'x.auth0.com', AUTH0_AUDIENCE: ' , ' }, /^AUTH0_AUDIENCE is required/],
    [{ AUTH0_DOMAIN: 'a.auth0.com', AUTH0_ISSUER_URL: 'https://a.auth0.com/', AUTH0_AUDIENCE: 'x' }, /^AUTH0_DOMAIN and AUTH0_ISSUER_URL are both set/],
    [{ AUTH0_DOMAIN: 'https://a.auth0.com/', AUTH0_AUDIENCE: 'x' }, /^AUTH0_DOMAIN must be a host name/],
    [{ AUTH0_DOMAIN: 'a..auth0.com', AUTH0_AUDIENCE: 'x' }, /^AUTH0_DOMAIN must be a host name/],
    [{ AUTH0_ISSUER_URL: 'not a url', AUTH0_AUDIENCE: 'x' }, /^AUTH0_ISSUER_URL must be an absolute URL/],
    [{ AUTH0_ISSUER_URL: 'ftp://a.example/', AUTH0_AUDIENCE: 'x' }, /^AUTH0_ISSUER_URL must be an http or https URL/],
    [{ AUTH0_ISSUER_URL: 'https://a.example/?x=1', AUTH0_AUDIENCE: 'x' }, /^AUTH0_ISSUER_URL must not contain/],
    [{ AUTH0_ISSUER_URL: 'https://u:p@a.example/', AUTH0_AUDIENCE: 'x' }, /^AUTH0_ISSUER_URL must not contain/],
    [{ AUTH0_ISSUER_URL: 'http://idp.example/', AUTH0_AUDIENCE: 'x', NODE_ENV: 'production' }, /^AUTH0_ISSUER_URL must use https when NODE_ENV=production/],
    [{ AUTH0_ALGORITHMS: 'HS256' }, /^AUTH0_ALGORITHMS must list asymmetric algorithms/],
    [{ AUTH0_ALGORITHMS: 'RS256,none' }, /^AUTH0_ALGORITHMS must list/],
    [{ AUTH0_ALGORITHMS: ',' }, /^AUTH0_ALGORITHMS must list/],
    [{ PORT: '70000' }, /^PORT must be <= 65535$/],
    [{ PORT: 'http' }, /^PORT must be integer$/],
    [{ PORT: '0x10' }, /^PORT must be integer$/],
    [{ JWKS_TIMEOUT_MS: '1e3' }, /^JWKS_TIMEOUT_MS must be integer$/],
    [{ JWKS_COOLDOWN_MS: '0' }, /^JWKS_COOLDOWN_MS must be >= 1000$/],
    [{ AUTH0_CLOCK_TOLERANCE: '-1' }, /^AUTH0_CLOCK_TOLERANCE must be integer$/],
    [{ JWKS_TIMEOUT_MS: '1.5' }, /^JWKS_TIMEOUT_MS must be integer$/],
    [{ LOG_LEVEL: 'loud' }, /^LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent$/],
    [{ CORS_ORIGINS: 'https://app.example.com/path' }, /^CORS_ORIGINS must be a comma-separated list of origins/],
    [{ CORS_ORIGINS: 'app.example.com' }, /^CORS_ORIGINS must be/],
    [{ CORS_ORIGINS: 'ftp://app.example.com' }, /^CORS_ORIGINS must be/],
    [{ AUTH0_ISSUER_URL: 'http://127.evil.example/', AUTH0_AUDIENCE: 'x', NODE_ENV: 'production' }, /^AUTH0_ISSUER_URL must use https/],
    [{ AUTH0_ISSUER_URL: 'https://a.example/#', AUTH0_AUDIENCE: 'x' }, /^AUTH0_ISSUER_URL must not contain/],
    [{ AUTH0_ISSUER_URL: 'https://a.example/?', AUTH0_AUDIENCE: 'x' }, /^AUTH0_ISSUER_URL must not contain/],
    [{ AUTH0_DOMAIN: 'a.example:99999', AUTH0_AUDIENCE: 'x' }, /^AUTH0_DOMAIN must be a host name/],
    [{ AUTH0_DOMAIN: 'a.example:1:2', AUTH0_AUDIENCE: 'x' }, /^AUTH0_DOMAIN must be a host name/],
    [{ AUTH0_DOMAIN: 'a.example:x', AUTH0_AUDIENCE: 'x' }, /^AUTH0_DOMAIN must be a host name/],
    [{ HOST: 'not a host' }, /^HOST must be an IP address or a host name$/],
    [{ HOST: '0.0.0.0' }, /^HOST must be a loopback address while the dev issuer runs/],
    [{ NODE_ENV: 'Production' }, /^AUTH0_DOMAIN or AUTH0_ISSUER_URL is required when NODE_ENV=production/],
    [{ AUTH0_JWKS_URL: 'https://keys.example.com/' }, /^AUTH0_JWKS_URL needs AUTH0_DOMAIN or AUTH0_ISSUER_URL/],
    [{ AUTH0_DOMAIN: 'a.auth0.com', AUTH0_AUDIENCE: 'x', AUTH0_JWKS_URL: 'keys' }, /^AUTH0_JWKS_URL must be an absolute URL/],
    [{ AUTH0_DOMAIN: 'a.auth0.com', AUTH0_AUDIENCE: 'x', AUTH0_JWKS_URL: 'http://keys.example.com/', NODE_ENV: 'production' }, /^AUTH0_JWKS_URL must use https when NODE_ENV=production/],
    [{ AUTH0_DOMAIN: 'a.auth0.com,b.auth0.com', AUTH0_AUDIENCE: 'x', AUTH0_JWKS_URL: 'https://keys.example.com/' }, /^AUTH0_JWKS_URL applies to one issuer only, and AUTH0_DOMAIN names 2/],
    [{ AUTH0_DOMAIN: 'a.auth0.com, A.auth0.com', AUTH0_AUDIENCE: 'x' }, /^AUTH0_DOMAIN names the same issuer twice$/],
    [{ AUTH0_ISSUER_URL: 'https://a.example/,https://a.example/', AUTH0_AUDIENCE: 'x' }, /^AUTH0_ISSUER_URL names the same issuer twice$/],
    [{ AUTH0_ISSUER_URL: 'https://a.example/,ftp://b.example/', AUTH0_AUDIENCE: 'x' }, /^AUTH0_ISSUER_URL must be an http or https URL/],
    [{ AUTH0_DOMAIN: 'a.auth0.com,https://b.example/', AUTH0_AUDIENCE: 'x' }, /^AUTH0_DOMAIN must be a host name/],
    [{ AUTH0_TOKEN_PROFILE: 'strict' }, /^AUTH0_TOKEN_PROFILE must be one of auth0, rfc9068$/],
    [{ AUTH0_MAX_TOKEN_AGE: '0' }, /^AUTH0_MAX_TOKEN_AGE must be >= 1$/],
    [{ AUTH0_MAX_TOKEN_AGE: '1h' }, /^AUTH0_MAX_TOKEN_AGE must be integer$/],
    [{ PUBLIC_URL: 'api.example.com' }, /^PUBLIC_URL must be an absolute URL/],
    [{ PUBLIC_URL: 'http://api.example.com/' }, /^PUBLIC_URL must use https \(http only for a loopback host outside production\)$/],
    [{ PUBLIC_URL: 'https://api.example.com/?x' }, /^PUBLIC_URL must not contain/],
    [{ PUBLIC_URL: 'http://127.0.0.1:3000/', NODE_ENV: 'production', AUTH0_DOMAIN: 'a.auth0.com', AUTH0_AUDIENCE: 'x' }, /^PUBLIC_URL must use https/],
    [{ RESOURCE_NAME: 'x'.repeat(201) }, /^RESOURCE_NAME must NOT have more than 200 characters$/],
    [{ RESOURCE_NAME: 'line\nbreak' }, /^RESOURCE_NAME must match pattern/],
    [{ HTTPS_PROXY: 'proxy.internal:3128' }, /^HTTPS_PROXY must be an http or https URL/],
    [{ http_proxy: 'socks5://proxy.internal' }, /^http_proxy must be an http or https URL/],
    [{ HTTP_PROXY: 'not a url' }, /^HTTP_PROXY must be an http or https URL/],
    [{ AUTH0_DPOP: 'sometimes' }, /^AUTH0_DPOP must be one of allowed, required, disabled$/],
    [{ AUTH0_DPOP_ALGORITHMS: 'ES256,HS256' }, /^AUTH0_DPOP_ALGORITHMS must list asymmetric algorithms from ES256, ES384, ES512, PS256, PS384, PS512, RS256, EdDSA$/],
    [{ AUTH0_DPOP_ALGORITHMS: 'none' }, /^AUTH0_DPOP_ALGORITHMS must list/],
    [{ AUTH0_DPOP_MAX_AGE: '0' }, /^AUTH0_DPOP_MAX_AGE must be >= 1$/],
    [{ AUTH0_DPOP_REPLAY_CAPACITY: '10' }, /^AUTH0_DPOP_REPLAY_CAPACITY must be >= 1000$/],
    [{ TRUST_PROXY: 'proxy.internal' }, /^TRUST_PROXY must be true, or a comma list of addresses/],
    [{ TRUST_PROXY: '10.0.0.0/33' }, /^TRUST_PROXY must be/],
    [{ TRUST_PROXY: '10.0.0.1/8/1' }, /^TRUST_PROXY must be/],
    [{ TRUST_PROXY: '2' }, /^TRUST_PROXY must be/],
    [{ HEADERS_TIMEOUT_MS: '0' }, /^HEADERS_TIMEOUT_MS must be >= 1000$/],
    [{ MAX_HEADER_SIZE: '1000000' }, /^MAX_HEADER_SIZE must be <= 65536$/],
    [{ OVERLOAD_MAX_EVENT_LOOP_UTILIZATION: '1.5' }, /^OVERLOAD_MAX_EVENT_LOOP_UTILIZATION must be <= 1$/],
    [{ METRICS_PORT: '70000' }, /^METRICS_PORT must be a port other than PORT/],
    [{ METRICS_PORT: '8080', PORT: '8080' }, /^METRICS_PORT must be a port other than PORT/],
    [{ METRICS_PORT: 'on' }, /^METRICS_PORT must match pattern/],
    [{ ACCESS_LOG: 'yes' }, /^ACCESS_LOG must be boolean$/],
  ]
  for (const [env, message] of mistakes) {
    t.throws(() => loadConfig(env), ConfigError, JSON.stringify(env))
    try {
      loadConfig(env)
    } catch (error) {
      t.match((error as Error).message, message, JSON.stringify(env))
      t.notMatch((error as Error).message, /\n/, 'one line')
    }
  }
})
