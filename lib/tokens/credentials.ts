import { AuthError } from '../errors.js'

// RFC 6750 §2.1: the scheme is case-insensitive and the token is a b64token. One token, nothing after it.
const BEARER = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i

// Fixed answers are made once: a flood of requests without a token should cost no stack traces.
export const HEADER_MISSING = new AuthError('authorization_header_missing', 'Authorization header is missing')
const MALFORMED = new AuthError('invalid_header', 'Authorization header must be Bearer followed by one token')

/** The access token of an `Authorization: Bearer <token>` header, or the contract's 401. */
export function bearerToken (authorization: string | undefined): string {
  if (authorization === undefined) {
    throw HEADER_MISSING
  }
  const match = BEARER.exec(authorization)
  if (match === null) {
    throw MALFORMED
  }
  return match[1]!
}
