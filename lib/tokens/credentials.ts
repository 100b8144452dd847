import { AuthError, type Scheme } from '../errors.js'

/** RFC 9449 §7.1 modes: which schemes a resource server accepts. */
export type DpopMode = 'allowed' | 'required' | 'disabled'

export interface Credentials {
  scheme: Scheme
  token: string
}

// RFC 6750 §2.1 and RFC 9449 §7.1: the scheme is case-insensitive and the token is a b64token. One token, nothing after it.
const CREDENTIALS = /^(Bearer|DPoP) +([A-Za-z0-9\-._~+/]+=*) *$/i

// Fixed answers are made once: a flood of requests without a token should cost no stack traces.
export const HEADER_MISSING = new AuthError('authorization_header_missing', 'Authorization header is missing')
const NOT_BEARER = new AuthError('invalid_header', 'Authorization header must be Bearer followed by one token')
const NOT_BEARER_OR_DPOP = new AuthError('invalid_header', 'Authorization header must be Bearer or DPoP followed by one token')
const NOT_DPOP = new AuthError('invalid_header', 'This API accepts DPoP-bound tokens only: Authorization: DPoP followed by one token, with a DPoP proof')

const SCHEMES: Record<DpopMode, readonly Scheme[]> = { allowed: ['Bearer', 'DPoP'], required: ['DPoP'], disabled: ['Bearer'] }
const REFUSAL: Record<DpopMode, AuthError> = { allowed: NOT_BEARER_OR_DPOP, required: NOT_DPOP, disabled: NOT_BEARER }

/** The schemes a mode accepts, in the order challenges offer them. */
export function acceptedSchemes (mode: DpopMode): readonly Scheme[] {
  return SCHEMES[mode]
}

/**
 * The credentials of an `Authorization` header, or the contract's 401: missing, malformed, or a scheme the
 * mode does not accept.
 */
export function parseCredentials (authorization: string | undefined, mode: DpopMode): Credentials {
  if (authorization === undefined) {
    throw HEADER_MISSING
  }
  const match = CREDENTIALS.exec(authorization)
  const scheme: Scheme | undefined = match === null ? undefined : match[1]!.length === 4 ? 'DPoP' : 'Bearer'
  if (scheme === undefined || !SCHEMES[mode].includes(scheme)) {
    throw REFUSAL[mode]
  }
  return { scheme, token: match![2]! }
}

/** The scheme a header claims, for the challenge that answers it (DPoP only when it says so). */
export function claimedScheme (authorization: string | undefined): Scheme {
  return authorization !== undefined && /^dpop /i.test(authorization) ? 'DPoP' : 'Bearer'
}
