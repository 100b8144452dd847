import { WRONG_CLAIM_TYPE } from './claims.js'
import { AuthError } from '../errors.js'

/**
 * What each @fastify/jwt / fast-jwt error code means for the client, mapped by code and never by
 * message. @fastify/jwt folds bad signatures, bad keys and malformed tokens into one code; the claim
 * codes (`iss`/`aud`) never arise because those checks are ours.
 */
const BY_CODE: Record<string, AuthError> = {
  FST_JWT_AUTHORIZATION_TOKEN_EXPIRED: new AuthError('token_expired', 'Token has expired'),
  FAST_JWT_INACTIVE: new AuthError('invalid_claims', 'Token is not valid yet (nbf)', { permanent: false }),
  FAST_JWT_INVALID_CLAIM_TYPE: WRONG_CLAIM_TYPE,
  FAST_JWT_MISSING_SIGNATURE: new AuthError('invalid_token', 'Token is not signed'),
}
const INVALID = new AuthError('invalid_token', 'Token is malformed or its signature is invalid')

/**
 * Maps an error from `request.jwtVerify()` to the contract. Our own errors (header parsing, key lookup)
 * pass through; any other token error is `invalid_token`. Anything that is not a token error is a bug of
 * ours and is rethrown, to surface as a logged 500 rather than hide as a 401.
 */
export function toAuthError (error: unknown): AuthError {
  if (error instanceof AuthError) {
    return error
  }
  const code = (error as { code?: unknown } | null)?.code
  if (typeof code === 'string' && (code.startsWith('FST_JWT_') || code.startsWith('FAST_JWT_'))) {
    return BY_CODE[code] ?? INVALID
  }
  throw error
}
