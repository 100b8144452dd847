import { envSchema } from 'env-schema'
import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import { parseEnv } from 'node:util'
import { Type, type Static } from 'typebox'

/** Asymmetric JWS algorithms we can verify with a JWKS key. HS* and `none` are never allowed. */
export const SUPPORTED_ALGORITHMS = [
  'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512',
] as const
export type Algorithm = (typeof SUPPORTED_ALGORITHMS)[number]

/** The audience dev-issuer tokens carry when AUTH0_AUDIENCE is not set. */
export const DEV_AUDIENCE = 'dev-api'

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const

const EnvSchema = Type.Object({
  NODE_ENV: Type.Optional(Type.String()),
  AUTH0_DOMAIN: Type.Optional(Type.String()),
  AUTH0_ISSUER_URL: Type.Optional(Type.String()),
  AUTH0_AUDIENCE: Type.Optional(Type.String()),
  AUTH0_JWKS_URL: Type.Optional(Type.String()),
  AUTH0_ALGORITHMS: Type.String({ default: 'RS256' }),
  AUTH0_CLOCK_TOLERANCE: Type.Integer({ minimum: 0, maximum: 300, default: 5 }),
  JWKS_TIMEOUT_MS: Type.Integer({ minimum: 50, maximum: 60_000, default: 5_000 }),
  JWKS_COOLDOWN_MS: Type.Integer({ minimum: 1000, maximum: 3_600_000, default: 30_000 }),
  JWKS_MAX_AGE_MS: Type.Integer({ minimum: 1000, maximum: 86_400_000, default: 600_000 }),
  PORT: Type.Integer({ minimum: 0, maximum: 65_535, default: 3000 }),
  HOST: Type.String({ minLength: 1, default: '127.0.0.1' }),
  CORS_ORIGINS: Type.Optional(Type.String()),
  LOG_LEVEL: Type.Enum(LOG_LEVELS, { default: 'info' }),
  SHUTDOWN_TIMEOUT_MS: Type.Integer({ minimum: 0, maximum: 600_000, default: 10_000 }),
})
type Env = Static<typeof EnvSchema>

/** Every environment variable the service reads. */
export const CONFIG_VARIABLES: readonly string[] = Object.keys(EnvSchema.properties)
const INTEGER_VARIABLES = Object.entries(EnvSchema.properties).filter(([, schema]) => (schema as { type?: unknown }).type === 'integer').map(([name]) => name)

export interface Config {
  production: boolean
  /** The trusted issuer, exactly as tokens state it in `iss`; undefined means the embedded dev issuer. */
  issuer: string | undefined
  /** Where the issuer's keys are, when not at `<issuer>.well-known/jwks.json`. */
  jwksUrl: string | undefined
  audiences: string[]
  algorithms: Algorithm[]
  clockToleranceSec: number
  jwksTimeoutMs: number
  jwksCooldownMs: number
  /** The key set is fetched again once older than this; no verified token is trusted longer either. */
  jwksMaxAgeMs: number
  port: number
  host: string
  corsOrigins: string[]
  logLevel: (typeof LOG_LEVELS)[number]
  shutdownTimeoutMs: number
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
  const issuer = resolveIssuer(parsed, production)
  if (!isIP(parsed.HOST) && !HOST_NAME.test(parsed.HOST)) {
    throw new ConfigError('HOST must be an IP address or a host name')
  }
  if (issuer === undefined && !isLoopback(parsed.HOST)) {
    throw new ConfigError('HOST must be a loopback address while the dev issuer runs (anyone who can reach it can mint tokens): set AUTH0_DOMAIN or AUTH0_ISSUER_URL, or HOST=127.0.0.1')
  }
  const audiences = splitList(parsed.AUTH0_AUDIENCE)
  const jwksUrl = parsed.AUTH0_JWKS_URL === undefined ? undefined : parseHttpUrl('AUTH0_JWKS_URL', parsed.AUTH0_JWKS_URL, production)
  if (jwksUrl !== undefined && issuer === undefined) {
    throw new ConfigError('AUTH0_JWKS_URL needs AUTH0_DOMAIN or AUTH0_ISSUER_URL: the dev issuer serves its own keys')
  }
  if (issuer && audiences.length === 0) {
    throw new ConfigError(`AUTH0_AUDIENCE is required with ${parsed.AUTH0_DOMAIN ? 'AUTH0_DOMAIN' : 'AUTH0_ISSUER_URL'}: set it to your API identifier`)
  }

  return {
    production,
    issuer,
    jwksUrl,
    audiences: audiences.length > 0 ? audiences : [DEV_AUDIENCE],
    algorithms: parseAlgorithms(parsed.AUTH0_ALGORITHMS),
    clockToleranceSec: parsed.AUTH0_CLOCK_TOLERANCE,
    jwksTimeoutMs: parsed.JWKS_TIMEOUT_MS,
    jwksCooldownMs: parsed.JWKS_COOLDOWN_MS,
    jwksMaxAgeMs: parsed.JWKS_MAX_AGE_MS,
    port: parsed.PORT,
    host: parsed.HOST,
    corsOrigins: parseOrigins(parsed.CORS_ORIGINS),
    logLevel: parsed.LOG_LEVEL,
    shutdownTimeoutMs: parsed.SHUTDOWN_TIMEOUT_MS,
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

function resolveIssuer (env: Env, production: boolean): string | undefined {
  const { AUTH0_DOMAIN: domain, AUTH0_ISSUER_URL: issuerUrl } = env
  if (domain && issuerUrl) {
    throw new ConfigError('AUTH0_DOMAIN and AUTH0_ISSUER_URL are both set: set only one')
  }
  if (domain) {
    // A bare host name, as Auth0 shows it ("example.eu.auth0.com"); a port is allowed for private installs.
    const [hostname, port, ...rest] = domain.split(':')
    if (!HOST_NAME.test(hostname!) || rest.length > 0 || (port !== undefined && !(/^\d{1,5}$/.test(port) && Number(port) <= 65_535))) {
      throw new ConfigError('AUTH0_DOMAIN must be a host name such as example.eu.auth0.com (use AUTH0_ISSUER_URL for a full URL)')
    }
    return `https://${domain.toLowerCase()}/`
  }
  if (issuerUrl) {
    // Kept exactly as given: it is compared exactly with the token's `iss` (Auth0's end in a slash,
    // Keycloak's, Okta's and Google's do not).
    parseHttpUrl('AUTH0_ISSUER_URL', issuerUrl, production)
    return issuerUrl
  }
  if (production) {
    throw new ConfigError('AUTH0_DOMAIN or AUTH0_ISSUER_URL is required when NODE_ENV=production (the dev issuer never runs in production)')
  }
  return undefined
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

function isLoopback (host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || (isIP(host) === 4 && host.startsWith('127.'))
}

function parseAlgorithms (value: string): Algorithm[] {
  const algorithms = splitList(value)
  const unsupported = algorithms.find((alg) => !(SUPPORTED_ALGORITHMS as readonly string[]).includes(alg))
  if (unsupported !== undefined || algorithms.length === 0) {
    throw new ConfigError(`AUTH0_ALGORITHMS must list asymmetric algorithms from ${SUPPORTED_ALGORITHMS.join(', ')}`)
  }
  return algorithms as Algorithm[]
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
