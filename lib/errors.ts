import { STATUS_CODES } from 'node:http'

export type AuthErrorCode =
  | 'authorization_header_missing'
  | 'invalid_header'
  | 'token_expired'
  | 'invalid_claims'
  | 'invalid_token'
  | 'insufficient_scope'
  | 'jwks_unavailable'

/** The RFC 6750 `error` attribute each code puts in its challenge (`missing` adds none, §3.1). */
const CHALLENGE_ERROR: Record<AuthErrorCode, string | undefined> = {
  authorization_header_missing: undefined,
  invalid_header: 'invalid_request',
  token_expired: 'invalid_token',
  invalid_claims: 'invalid_token',
  invalid_token: 'invalid_token',
  insufficient_scope: 'insufficient_scope',
  jwks_unavailable: undefined,
}

const STATUS: Record<AuthErrorCode, number> = {
  authorization_header_missing: 401,
  invalid_header: 401,
  token_expired: 401,
  invalid_claims: 401,
  invalid_token: 401,
  insufficient_scope: 403,
  jwks_unavailable: 503,
}

const REALM = 'api'

/** Codes whose answer depends on the token alone; `permanent: false` marks the exceptions (nbf, an unknown key). */
const PERMANENT = new Set<AuthErrorCode>(['token_expired', 'invalid_claims', 'invalid_token'])

/**
 * The one error class of the service. Messages are fixed texts written here, never copied from a token,
 * an upstream response or another library's error, so nothing secret reaches a client.
 */
export class AuthError extends Error {
  override name = 'AuthError'
  readonly statusCode: number
  /** Response headers the error carries: the `WWW-Authenticate` challenge, or `Retry-After`. */
  readonly headers: Record<string, string>
  /** The same token will always get this answer (a bad signature, an expiry), so it may be remembered. */
  readonly permanent: boolean

  constructor (readonly code: AuthErrorCode, message: string, extra: { scopes?: readonly string[], retryAfterSec?: number, permanent?: boolean } = {}) {
    super(message)
    this.statusCode = STATUS[code]
    this.permanent = extra.permanent ?? PERMANENT.has(code)
    this.headers = this.statusCode === 503
      ? { 'retry-after': String(extra.retryAfterSec ?? 1) }
      : { 'www-authenticate': challenge(code, message, extra.scopes) }
  }

  /** Fastify's own error shape, plus our lower snake case `code`. */
  toJSON (): { statusCode: number, error: string, code: AuthErrorCode, message: string } {
    return { statusCode: this.statusCode, error: STATUS_CODES[this.statusCode]!, code: this.code, message: this.message }
  }
}

function challenge (code: AuthErrorCode, description: string, scopes: readonly string[] | undefined): string {
  const error = CHALLENGE_ERROR[code]
  if (error === undefined) {
    return `Bearer realm="${REALM}"`
  }
  const scope = scopes ? `, scope="${scopes.join(' ')}"` : ''
  return `Bearer realm="${REALM}", error="${error}", error_description="${description}"${scope}`
}
