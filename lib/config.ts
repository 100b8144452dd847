import { envSchema } from 'env-schema'
import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import { parseEnv } from 'node:util'
import { Type, type Static } from 'typebox'
import { DPOP_ALGORITHMS, type DpopAlgorithm } from './dpop/proof.js'
import type { ProxySettings } from './keys/http.js'
import type { DpopMode } from './tokens/credentials.js'
import { isLoopback } from './urls.js'

/** Asymmetric JWS algorithms we can verify with a JWKS key. HS* and `none` are never allowed. */
export const SUPPORTED_ALGORITHMS = [
  'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512',
] as const
export type Algorithm = (typeof SUPPORTED_ALGORITHMS)[number]

/** The audience dev-issuer tokens carry when AUTH0_AUDIENCE is not set. */
export const DEV_AUDIENCE = 'dev-api'

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const

/** Auth0's names: `auth0` accepts any access-token `typ`; `rfc9068` requires RFC 9068's `typ` and claims. */
export const TOKEN_PROFILES = ['auth0', 'rfc9068'] as const
export type TokenProfile = (typeof TOKEN_PROFILES)[number]

const EnvSchema = Type.Object({
  NODE_ENV: Type.Optional(Type.String()),
  AUTH0_DOMAIN: Type.Optional(Type.String()),
  AUTH0_ISSUER_URL: Type.Optional(Type.String()),
  AUTH0_AUDIENCE: Type.Optional(Type.String()),
  AUTH0_JWKS_URL: Type.Optional(Type.String()),
  AUTH0_ALGORITHMS: Type.String({ default: 'RS256' }),
  AUTH0_CLOCK_TOLERANCE: Type.Integer({ minimum: 0, maximum: 300, default: 5 }),
  AUTH0_TOKEN_PROFILE: Type.Enum(TOKEN_PROFILES, { default: 'auth0' }),
  AUTH0_MAX_TOKEN_AGE: Type.Optional(Type.Integer({ minimum: 1, maximum: 31_536_000 })),
  AUTH0_ALLOWED_CLIENTS: Type.Optional(Type.String()),
  AUTH0_DPOP: Type.Enum(['allowed', 'required', 'disabled'], { default: 'allowed' }),
  AUTH0_DPOP_ALGORITHMS: Type.String({ default: DPOP_ALGORITHMS.join(',') }),
  AUTH0_DPOP_MAX_AGE: Type.Integer({ minimum: 1, maximum: 600, default: 60 }),
  AUTH0_DPOP_REPLAY_CAPACITY: Type.Integer({ minimum: 1000, maximum: 10_000_000, default: 250_000 }),
  JWKS_TIMEOUT_MS: Type.Integer({ minimum: 50, maximum: 60_000, default: 5_000 }),
  JWKS_COOLDOWN_MS: Type.Integer({ minimum: 1000, maximum: 3_600_000, default: 30_000 }),
  JWKS_MAX_AGE_MS: Type.Integer({ minimum: 1000, maximum: 86_400_000, default: 600_000 }),
  PORT: Type.Integer({ minimum: 0, maximum: 65_535, default: 3000 }),
  HOST: Type.String({ minLength: 1, default: '127.0.0.1' }),
  CORS_ORIGINS: Type.Optional(Type.String()),
  LOG_LEVEL: Type.Enum(LOG_LEVELS, { default: 'info' }),
  SHUTDOWN_TIMEOUT_MS: Type.Integer({ minimum: 0, maximum: 600_000, default: 10_000 }),
  HEADERS_TIMEOUT_MS: Type.Integer({ minimum: 1000, maximum: 120_000, default: 10_000 }),
  REQUEST_TIMEOUT_MS: Type.Integer({ minimum: 1000, maximum: 600_000, default: 30_000 }),
  KEEP_ALIVE_TIMEOUT_MS: Type.Integer({ minimum: 1000, maximum: 600_000, default: 72_000 }),
  MAX_HEADER_SIZE: Type.Integer({ minimum: 4096, maximum: 65_536, default: 16_384 }),
  AUTH0_MAX_TOKEN_LENGTH: Type.Integer({ minimum: 256, maximum: 65_536, default: 8192 }),
  OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: Type.Integer({ minimum: 0, maximum: 10_000, default: 15 }),
  OVERLOAD_MAX_EVENT_LOOP_UTILIZATION: Type.Number({ minimum: 0, maximum: 1, default: 0 }),
  OVERLOAD_RETRY_AFTER_SEC: Type.Integer({ minimum: 1, maximum: 600, default: 2 }),
  METRICS_PORT: Type.String({ pattern: '^(\\d{1,5}|off)$', default: '9464' }),
  METRICS_REQUEST_DURATION: Type.Boolean({ default: false }),
  ACCESS_LOG: Type.Boolean({ default: false }),
  DOCS: Type.Optional(Type.Boolean()),
  PUBLIC_URL: Type.Optional(Type.String()),
  TRUST_PROXY: Type.Optional(Type.String()),
  RESOURCE_NAME: Type.Optional(Type.String({ maxLength: 200, pattern: '^[^\\x00-\\x1f\\x7f]*$' })),
  // Outbound proxy for discovery and key fetches, as curl and undici read it (lower case wins).
  HTTPS_PROXY: Type.Optional(Type.String()),
  https_proxy: Type.Optional(Type.String()),
  HTTP_PROXY: Type.Optional(Type.String()),
  http_proxy: Type.Optional(Type.String()),
  NO_PROXY: Type.Optional(Type.String()),
  no_proxy: Type.Optional(Type.String()),
})
type Env = Static<typeof EnvSchema>

/** Every environment variable the service reads. */
export const CONFIG_VARIABLES: readonly string[] = Object.keys(EnvSchema.properties)
const INTEGER_VARIABLES = Object.entries(EnvSchema.properties).filter(([, schema]) => (schema as { type?: unknown }).type === 'integer').map(([name]) => name)

export interface Config {
  production: boolean
  /** The trusted issuers, exactly as tokens state them in `iss`; none means the embedded dev issuer. */
  issuers: string[]
  /** Where the one issuer's keys are, instead of the `jwks_uri` of its metadata. */
  jwksUrl: string | undefined
  audiences: string[]
  algorithms: Algorithm[]
  clockToleranceSec: number
  tokenProfile: TokenProfile
  /** Tokens must carry `iat` and be at most this old. */
  maxTokenAgeSec: number | undefined
  /** Tokens must name one of these clients in `azp` or `client_id`; empty means any client. */
  allowedClients: string[]
  dpop: {
    mode: DpopMode
    algorithms: DpopAlgorithm[]
    /** How old a proof's `iat` may be, in seconds. */
    maxAgeSec: number
    /** How many proofs the replay store remembers at most. */
    replayCapacity: number
  }
  jwksTimeoutMs: number
  jwksCooldownMs: number
  /** The key set is fetched again once older than this; no verified token is trusted longer either. */
  jwksMaxAgeMs: number
  port: number
  host: string
  corsOrigins: string[]
  logLevel: (typeof LOG_LEVELS)[number]
  shutdownTimeoutMs: number
  /** Node's server limits: a client gets this long to send its headers, and its whole request; an idle keep-alive connection is closed after the third. */
  headersTimeoutMs: number
  requestTimeoutMs: number
  keepAliveTimeoutMs: number
  /** Bytes of request headers accepted; more is a 431. */
  maxHeaderSize: number
  /** Characters of an Authorization header accepted before anything is hashed, decoded or remembered. */
  maxTokenLength: number
  /** Shedding: past these (0 = not checked), requests get 503 `overloaded` at once. */
  overload: { maxEventLoopDelayMs: number, maxEventLoopUtilization: number, retryAfterSec: number }
  /** Prometheus metrics on a listener of their own (HOST, this port); undefined when off. */
  metricsPort: number | undefined
  /** The request-duration histogram (an onResponse hook per request). */
  metricsRequestDuration: boolean
  /** One JSON line per request. */
  accessLog: boolean
  /** OpenAPI at /openapi.json and the docs page at /docs. */
  docs: boolean
  /** The URL clients reach this API at (behind proxies and load balancers); enables RFC 9728 metadata. */
  publicUrl: string | undefined
  /** Fastify's trustProxy: which peers' X-Forwarded-* headers are believed (none by default). */
  trustProxy: boolean | string[]
  resourceName: string | undefined
  proxy: ProxySettings
}

/** A configuration mistake; its message is one line naming the variable. */
export class ConfigError extends Error {
  override name = 'ConfigError'
}

export interface LoadConfigOptions {
  /** A `.env` file to read first; variables in `env` win over it. */
  dotenvPath?: string
}

/**
 * The one place configuration is read. `env` is usually `process.env`; it wins over the `.env` file.
 * Empty values count as unset in both (`docker run -e PORT=` should not mean port 0).
 */
export function loadConfig (env: Record<string, string | undefined>, options: LoadConfigOptions = {}): Config {
  const data = { ...withoutEmpty(readEnvFile(options.dotenvPath)), ...withoutEmpty(env) }
  // ajv would read `0x10` or `1e3` as numbers: an integer setting is decimal digits and nothing else.
  const notDecimal = INTEGER_VARIABLES.find((name) => data[name] !== undefined && !/^\s*\d+\s*$/.test(data[name]))
  if (notDecimal !== undefined) {
    throw new ConfigError(`${notDecimal} must be integer`)
  }
  let parsed: Env
  try {
    parsed = envSchema<Env>({ schema: EnvSchema, data, env: false })
  } catch (error) {
    throw new ConfigError(describeSchemaError(error))
  }

  const production = parsed.NODE_ENV?.toLowerCase() === 'production'
  const issuers = resolveIssuers(parsed, production)
  const issuerVariable = parsed.AUTH0_DOMAIN ? 'AUTH0_DOMAIN' : 'AUTH0_ISSUER_URL'
  if (!isIP(parsed.HOST) && !HOST_NAME.test(parsed.HOST)) {
    throw new ConfigError('HOST must be an IP address or a host name')
  }
  if (issuers.length === 0 && !isLoopback(parsed.HOST)) {
    throw new ConfigError('HOST must be a loopback address while the dev issuer runs (anyone who can reach it can mint tokens): set AUTH0_DOMAIN or AUTH0_ISSUER_URL, or HOST=127.0.0.1')
  }
  const audiences = splitList(parsed.AUTH0_AUDIENCE)
  const jwksUrl = parsed.AUTH0_JWKS_URL === undefined ? undefined : parseHttpUrl('AUTH0_JWKS_URL', parsed.AUTH0_JWKS_URL, production)
  if (jwksUrl !== undefined && issuers.length !== 1) {
    throw new ConfigError(issuers.length === 0
      ? 'AUTH0_JWKS_URL needs AUTH0_DOMAIN or AUTH0_ISSUER_URL: the dev issuer serves its own keys'
      : `AUTH0_JWKS_URL applies to one issuer only, and ${issuerVariable} names ${issuers.length}: leave it unset to use each issuer's metadata`)
  }
  if (issuers.length > 0 && audiences.length === 0) {
    throw new ConfigError(`AUTH0_AUDIENCE is required with ${issuerVariable}: set it to your API identifier`)
  }

  return {
    production,
    issuers,
    jwksUrl,
    audiences: audiences.length > 0 ? audiences : [DEV_AUDIENCE],
    algorithms: parseList('AUTH0_ALGORITHMS', parsed.AUTH0_ALGORITHMS, SUPPORTED_ALGORITHMS),
    clockToleranceSec: parsed.AUTH0_CLOCK_TOLERANCE,
    tokenProfile: parsed.AUTH0_TOKEN_PROFILE,
    maxTokenAgeSec: parsed.AUTH0_MAX_TOKEN_AGE,
    allowedClients: splitList(parsed.AUTH0_ALLOWED_CLIENTS),
    dpop: {
      mode: parsed.AUTH0_DPOP as DpopMode,
      algorithms: parseList('AUTH0_DPOP_ALGORITHMS', parsed.AUTH0_DPOP_ALGORITHMS, DPOP_ALGORITHMS),
      maxAgeSec: parsed.AUTH0_DPOP_MAX_AGE,
      replayCapacity: parsed.AUTH0_DPOP_REPLAY_CAPACITY,
    },
    jwksTimeoutMs: parsed.JWKS_TIMEOUT_MS,
    jwksCooldownMs: parsed.JWKS_COOLDOWN_MS,
    jwksMaxAgeMs: parsed.JWKS_MAX_AGE_MS,
    port: parsed.PORT,
    host: parsed.HOST,
    corsOrigins: parseOrigins(parsed.CORS_ORIGINS),
    logLevel: parsed.LOG_LEVEL,
    shutdownTimeoutMs: parsed.SHUTDOWN_TIMEOUT_MS,
    headersTimeoutMs: parsed.HEADERS_TIMEOUT_MS,
    requestTimeoutMs: parsed.REQUEST_TIMEOUT_MS,
    keepAliveTimeoutMs: parsed.KEEP_ALIVE_TIMEOUT_MS,
    maxHeaderSize: parsed.MAX_HEADER_SIZE,
    maxTokenLength: parsed.AUTH0_MAX_TOKEN_LENGTH,
    overload: {
      maxEventLoopDelayMs: parsed.OVERLOAD_MAX_EVENT_LOOP_DELAY_MS,
      maxEventLoopUtilization: parsed.OVERLOAD_MAX_EVENT_LOOP_UTILIZATION,
      retryAfterSec: parsed.OVERLOAD_RETRY_AFTER_SEC,
    },
    metricsPort: parseMetricsPort(parsed.METRICS_PORT, parsed.PORT),
    metricsRequestDuration: parsed.METRICS_REQUEST_DURATION,
    accessLog: parsed.ACCESS_LOG,
    docs: parsed.DOCS ?? !production,
    publicUrl: parsed.PUBLIC_URL === undefined ? undefined : parsePublicUrl(parsed.PUBLIC_URL, production),
    trustProxy: parseTrustProxy(parsed.TRUST_PROXY),
    resourceName: parsed.RESOURCE_NAME,
    proxy: {
      httpsProxy: parseProxy(parsed.https_proxy === undefined ? 'HTTPS_PROXY' : 'https_proxy', parsed.https_proxy ?? parsed.HTTPS_PROXY),
      httpProxy: parseProxy(parsed.http_proxy === undefined ? 'HTTP_PROXY' : 'http_proxy', parsed.http_proxy ?? parsed.HTTP_PROXY),
      noProxy: parsed.no_proxy ?? parsed.NO_PROXY,
    },
  }
}

const HOST_NAME = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/i

function readEnvFile (path: string | undefined): Record<string, string | undefined> {
  if (path === undefined) {
    return {}
  }
  try {
    return parseEnv(readFileSync(path, 'utf8'))
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      return {}
    }
    throw new ConfigError(`${path} cannot be read: ${(error as NodeJS.ErrnoException).code}`)
  }
}

function withoutEmpty (env: Record<string, string | undefined>): Record<string, string> {
  return Object.fromEntries(Object.entries(env).filter((entry): entry is [string, string] => entry[1] !== undefined && entry[1].trim() !== ''))
}

function resolveIssuers (env: Env, production: boolean): string[] {
  const { AUTH0_DOMAIN: domains, AUTH0_ISSUER_URL: issuerUrls } = env
  if (domains && issuerUrls) {
    throw new ConfigError('AUTH0_DOMAIN and AUTH0_ISSUER_URL are both set: set only one')
  }
  if (domains) {
    return unique('AUTH0_DOMAIN', splitList(domains).map((domain) => {
      // A bare host name, as Auth0 shows it ("example.eu.auth0.com"); a port is allowed for private installs.
      const [hostname, port, ...rest] = domain.split(':')
      if (!HOST_NAME.test(hostname!) || rest.length > 0 || (port !== undefined && !(/^\d{1,5}$/.test(port) && Number(port) <= 65_535))) {
        throw new ConfigError('AUTH0_DOMAIN must be a host name such as example.eu.auth0.com, or a comma list of them (use AUTH0_ISSUER_URL for full URLs)')
      }
      return `https://${domain.toLowerCase()}/`
    }))
  }
  if (issuerUrls) {
    // Kept exactly as given: they are compared exactly with the token's `iss` (Auth0's end in a slash,
    // Keycloak's, Okta's and Google's do not).
    return unique('AUTH0_ISSUER_URL', splitList(issuerUrls).map((issuerUrl) => {
      parseHttpUrl('AUTH0_ISSUER_URL', issuerUrl, production)
      return issuerUrl
    }))
  }
  if (production) {
    throw new ConfigError('AUTH0_DOMAIN or AUTH0_ISSUER_URL is required when NODE_ENV=production (the dev issuer never runs in production)')
  }
  return []
}

function unique (variable: string, values: string[]): string[] {
  if (new Set(values).size !== values.length) {
    throw new ConfigError(`${variable} names the same issuer twice`)
  }
  return values
}

/** Checks an absolute http(s) URL without credentials, query or fragment (http only for loopback in production). */
function parseHttpUrl (variable: string, value: string, production: boolean): string {
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw new ConfigError(`${variable} must be an absolute URL such as https://example.eu.auth0.com/`)
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new ConfigError(`${variable} must be an http or https URL`)
  }
  if (value.includes('?') || value.includes('#') || url.username || url.password) {
    throw new ConfigError(`${variable} must not contain credentials, a query or a fragment`)
  }
  // Keys fetched over plain http could be swapped in transit; only a loopback issuer may use it in production.
  if (production && url.protocol === 'http:' && !isLoopback(url.hostname)) {
    throw new ConfigError(`${variable} must use https when NODE_ENV=production`)
  }
  return url.href
}

/** PUBLIC_URL: how clients reach this API, so https unless on a loopback host outside production. */
function parsePublicUrl (value: string, production: boolean): string {
  const url = new URL(parseHttpUrl('PUBLIC_URL', value, production))
  if (url.protocol === 'http:' && (production || !isLoopback(url.hostname))) {
    throw new ConfigError('PUBLIC_URL must use https (http only for a loopback host outside production)')
  }
  return value
}

/** METRICS_PORT: a port other than the API's (0: any free one), or `off`. */
function parseMetricsPort (value: string, apiPort: number): number | undefined {
  if (value === 'off') {
    return undefined
  }
  const port = Number(value)
  if (port > 65_535 || (port === apiPort && port !== 0)) {
    throw new ConfigError('METRICS_PORT must be a port other than PORT (metrics never share the API\'s listener), or off')
  }
  return port
}

/** A forward proxy URL (credentials allowed: it never reaches a log). */
function parseProxy (variable: string, value: string | undefined): string | undefined {
  if (value !== undefined && !/^https?:$/.test(URL.parse(value)?.protocol ?? '')) {
    throw new ConfigError(`${variable} must be an http or https URL such as http://proxy.internal:3128`)
  }
  return value
}

/** A comma list of asymmetric algorithms, each one of `supported`; HS* and `none` never are. */
function parseList<T extends string> (variable: string, value: string, supported: readonly T[]): T[] {
  const algorithms = splitList(value)
  if (algorithms.length === 0 || !algorithms.every((alg) => (supported as readonly string[]).includes(alg))) {
    throw new ConfigError(`${variable} must list asymmetric algorithms from ${supported.join(', ')}`)
  }
  return algorithms as T[]
}

const PROXY_RANGES = new Set(['loopback', 'linklocal', 'uniquelocal'])

/** TRUST_PROXY: `true` (any peer: only behind a proxy that overwrites X-Forwarded-*), or addresses, CIDR ranges and proxy-addr's named ranges. */
function parseTrustProxy (value: string | undefined): boolean | string[] {
  if (value === undefined || value === 'true') {
    return value === 'true'
  }
  const entries = splitList(value)
  for (const entry of entries) {
    const [address, prefix, ...rest] = entry.split('/')
    const family = isIP(address!)
    const validPrefix = prefix === undefined || (/^\d{1,3}$/.test(prefix) && Number(prefix) <= (family === 6 ? 128 : 32))
    if (!PROXY_RANGES.has(entry) && (family === 0 || !validPrefix || rest.length > 0)) {
      throw new ConfigError('TRUST_PROXY must be true, or a comma list of addresses, CIDR ranges, loopback, linklocal or uniquelocal')
    }
  }
  return entries
}

function parseOrigins (value: string | undefined): string[] {
  const origins = splitList(value)
  for (const origin of origins) {
    if (origin !== '*' && !isOrigin(origin)) {
      throw new ConfigError('CORS_ORIGINS must be a comma-separated list of origins such as https://app.example.com, or *')
    }
  }
  return origins
}

function isOrigin (value: string): boolean {
  try {
    const url = new URL(value)
    return (url.protocol === 'https:' || url.protocol === 'http:') && url.origin === value
  } catch {
    return false
  }
}

function splitList (value: string | undefined): string[] {
  return (value ?? '').split(',').map((item) => item.trim()).filter((item) => item !== '')
}

/** Turns env-schema's (ajv's) first error into one line that names the variable. */
function describeSchemaError (error: unknown): string {
  const [first] = (error as { errors: SchemaError[] }).errors
  const variable = first!.instancePath.slice(1)
  const allowed = first!.params.allowedValues
  return `${variable} ${allowed ? `must be one of ${allowed.join(', ')}` : first!.message}`
}

interface SchemaError {
  instancePath: string
  message: string
  params: { allowedValues?: string[] }
}
