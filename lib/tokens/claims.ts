import type { TokenProfile } from '../config.js'
import { AuthError } from '../errors.js'

/** The verified claims of an access token, as handlers see them on `request.user`. */
export interface AccessTokenClaims {
  iss: string
  aud: string | string[]
  exp: number
  sub?: string
  iat?: number
  nbf?: number
  jti?: string
  client_id?: string
  azp?: string
  /** Space-separated scopes, as the token states them (a route's `config.auth` is what checks them). */
  scope?: unknown
  /** Auth0 RBAC permissions, as the token states them. */
  permissions?: unknown
  [claim: string]: unknown
}

export interface ClaimRules {
  issuers: ReadonlySet<string>
  audiences: readonly string[]
  profile: TokenProfile
  clockToleranceSec: number
  /** `iat` is required and may be at most this old. */
  maxTokenAgeSec?: number | undefined
  /** `azp` or `client_id` must be one of these; empty means any client. */
  allowedClients: ReadonlySet<string>
}

// Made once, like every fixed answer: a refused token should cost no stack trace.
const NO_EXPIRY = new AuthError('invalid_claims', 'Token has no expiry (exp)')
export const UNTRUSTED_ISSUER = new AuthError('invalid_claims', 'Token issuer is not trusted')
const WRONG_AUDIENCE = new AuthError('invalid_claims', 'Token audience is not accepted')
export const WRONG_CLAIM_TYPE = new AuthError('invalid_claims', 'Token has a claim of the wrong type')
const NO_ISSUED_AT = new AuthError('invalid_claims', 'Token has no issue time (iat)')
const TOO_OLD = new AuthError('invalid_claims', 'Token is older than this API accepts (iat)')
const ISSUED_IN_FUTURE = new AuthError('invalid_claims', 'Token is issued in the future (iat)', { permanent: false })
const CLIENT_NOT_ALLOWED = new AuthError('invalid_claims', 'Token client is not allowed (azp, client_id)')
const NOT_AN_ACCESS_TOKEN = new AuthError('invalid_token', 'Token type is not an access token (typ)')

/** The claims RFC 9068 §2.2 requires of a JWT access token, with their types. */
const RFC9068_CLAIMS = { iss: 'string', exp: 'number', aud: 'audience', sub: 'string', client_id: 'string', iat: 'number', jti: 'string' } as const
const MISSING_CLAIM = Object.fromEntries(Object.keys(RFC9068_CLAIMS).map((claim) =>
  [claim, new AuthError('invalid_claims', `Token lacks a claim its profile requires (${claim})`)]))

// RFC 8725 §3.11: an ID token, a logout token or a DPoP proof is never an access token. Compared in lower case.
const ACCESS_TOKEN_TYPES: Record<TokenProfile, ReadonlySet<string | undefined>> = {
  auth0: new Set([undefined, 'jwt', 'at+jwt', 'application/at+jwt']),
  rfc9068: new Set(['at+jwt', 'application/at+jwt']), // RFC 9068 §4
}

/** Checks the header's `typ` against the profile, before any key is looked up. */
export function checkTokenType (typ: unknown, profile: TokenProfile): void {
  if (!ACCESS_TOKEN_TYPES[profile].has(typeof typ === 'string' ? typ.toLowerCase() : typ === undefined ? undefined : '')) {
    throw NOT_AN_ACCESS_TOKEN
  }
}

/**
 * Checks what the signature check leaves to us: `exp`, `iss` and `aud` must be present and right
 * (fast-jwt skips absent claims, and @fastify/jwt folds its own claim errors into "invalid signature"),
 * then the profile's and the configuration's rules. `exp` and `nbf` values themselves are checked by
 * fast-jwt with the clock tolerance.
 */
export function checkClaims (payload: Record<string, unknown>, rules: ClaimRules, nowSec: number): AccessTokenClaims {
  if (typeof payload.exp !== 'number') {
    throw NO_EXPIRY
  }
  if (typeof payload.iss !== 'string' || !rules.issuers.has(payload.iss)) {
    throw UNTRUSTED_ISSUER
  }
  if (!hasAudience(payload.aud, rules.audiences)) {
    throw WRONG_AUDIENCE
  }
  if (rules.profile === 'rfc9068') {
    for (const [claim, type] of Object.entries(RFC9068_CLAIMS)) {
      const value = payload[claim]
      if (value === undefined) {
        throw MISSING_CLAIM[claim]!
      }
      if (type === 'audience' ? !isAudience(value) : typeof value !== type) {
        throw WRONG_CLAIM_TYPE
      }
    }
  }
  for (const claim of ['sub', 'jti', 'client_id', 'azp'] as const) {
    if (payload[claim] !== undefined && typeof payload[claim] !== 'string') {
      throw WRONG_CLAIM_TYPE
    }
  }
  checkIssuedAt(payload.iat, rules, nowSec)
  if (rules.allowedClients.size > 0 && !rules.allowedClients.has(payload.azp as string) && !rules.allowedClients.has(payload.client_id as string)) {
    throw CLIENT_NOT_ALLOWED
  }
  return deepFreeze(payload) as AccessTokenClaims
}

/** Until when verified claims may be trusted: their `exp`, or the end of the accepted age. */
export function trustedUntilMs (claims: AccessTokenClaims, rules: ClaimRules): number {
  const expiresMs = (claims.exp + rules.clockToleranceSec) * 1000
  return rules.maxTokenAgeSec === undefined ? expiresMs : Math.min(expiresMs, (claims.iat! + rules.maxTokenAgeSec + rules.clockToleranceSec) * 1000)
}

function checkIssuedAt (iat: unknown, rules: ClaimRules, nowSec: number): void {
  if (iat === undefined) {
    if (rules.maxTokenAgeSec !== undefined) {
      throw NO_ISSUED_AT
    }
    return
  }
  if (typeof iat !== 'number') {
    throw WRONG_CLAIM_TYPE
  }
  if (iat > nowSec + rules.clockToleranceSec) {
    throw ISSUED_IN_FUTURE
  }
  if (rules.maxTokenAgeSec !== undefined && nowSec - iat > rules.maxTokenAgeSec + rules.clockToleranceSec) {
    throw TOO_OLD
  }
}

function hasAudience (aud: unknown, audiences: readonly string[]): boolean {
  return typeof aud === 'string'
    ? audiences.includes(aud)
    : Array.isArray(aud) && aud.some((value) => audiences.includes(value))
}

function isAudience (aud: unknown): boolean {
  return typeof aud === 'string' || (Array.isArray(aud) && aud.every((value) => typeof value === 'string'))
}

/** Verified claims are facts shared by every request that presents the token: nobody may change them. */
function deepFreeze<T> (value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const inner of Object.values(value)) {
      deepFreeze(inner)
    }
    Object.freeze(value)
  }
  return value
}
