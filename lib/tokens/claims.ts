import { AuthError } from './errors.js'

/** The verified claims of an access token, as handlers see them on `request.user`. */
export interface AccessTokenClaims {
  iss: string
  aud: string | string[]
  exp: number
  sub?: string
  iat?: number
  nbf?: number
  /** Space-separated scopes, as the token states them (a route's `config.auth` is what checks them). */
  scope?: unknown
  /** Auth0 RBAC permissions, as the token states them. */
  permissions?: unknown
  [claim: string]: unknown
}

// Made once, like every fixed answer: a refused token should cost no stack trace.
const NO_EXPIRY = new AuthError('invalid_claims', 'Token has no expiry (exp)')
const UNTRUSTED_ISSUER = new AuthError('invalid_claims', 'Token issuer is not trusted')
const WRONG_AUDIENCE = new AuthError('invalid_claims', 'Token audience is not accepted')
export const WRONG_CLAIM_TYPE = new AuthError('invalid_claims', 'Token has a claim of the wrong type')

export interface ExpectedClaims {
  issuer: string
  audiences: readonly string[]
}

/**
 * Checks what the signature check leaves to us: `exp`, `iss` and `aud` must be present and right
 * (fast-jwt skips absent claims, and @fastify/jwt folds its own claim errors into "invalid signature").
 * `exp` and `nbf` values themselves are checked by fast-jwt with the clock tolerance.
 */
export function checkClaims (payload: Record<string, unknown>, expected: ExpectedClaims): AccessTokenClaims {
  if (typeof payload.exp !== 'number') {
    throw NO_EXPIRY
  }
  if (payload.iss !== expected.issuer) {
    throw UNTRUSTED_ISSUER
  }
  const { aud } = payload
  const accepted = typeof aud === 'string'
    ? expected.audiences.includes(aud)
    : Array.isArray(aud) && aud.some((value) => expected.audiences.includes(value))
  if (!accepted) {
    throw WRONG_AUDIENCE
  }
  if (payload.sub !== undefined && typeof payload.sub !== 'string') {
    throw WRONG_CLAIM_TYPE
  }
  return deepFreeze(payload) as AccessTokenClaims
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
