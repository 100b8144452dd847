import { hash } from 'node:crypto'
import { AuthError, type Scheme } from '../errors.js'
import type { AccessTokenClaims } from '../tokens/claims.js'
import { WRONG_CLAIM_TYPE } from '../tokens/claims.js'
import type { DpopMode } from '../tokens/credentials.js'

/** What every request with a DPoP-bound token must prove: the key (`cnf.jkt`) and the token (`ath`). */
export interface TokenBinding {
  jkt: string
  /** base64url SHA-256 of the access token, as the proof's `ath` must state it. */
  ath: string
}

// Both depend on the token alone, so they are remembered like any rejection.
const BOUND_AS_BEARER = new AuthError('invalid_token', 'Token is DPoP-bound: send it as Authorization: DPoP with a DPoP proof')
const NOT_BOUND = new AuthError('invalid_token', 'Token is not DPoP-bound: send it as Authorization: Bearer')

/**
 * The binding a verified token brings to each request (RFC 9449 §7): a DPoP-bound token (`cnf.jkt`) must
 * come with the DPoP scheme and a proof, and only such a token may (§7.2). With DPoP disabled, `cnf` is
 * ignored and every token is a bearer token.
 */
export function tokenBinding (claims: AccessTokenClaims, scheme: Scheme, token: string, mode: DpopMode): TokenBinding | undefined {
  if (mode === 'disabled') {
    return undefined
  }
  const jkt = boundKey(claims.cnf)
  if (scheme === 'Bearer') {
    if (jkt !== undefined) {
      throw BOUND_AS_BEARER
    }
    return undefined
  }
  if (jkt === undefined) {
    throw NOT_BOUND
  }
  return { jkt, ath: accessTokenHash(token) }
}

/** The `ath` of a proof for `token`: base64url SHA-256 of the token (RFC 9449 §4.2). */
export function accessTokenHash (token: string): string {
  return hash('sha256', token, 'base64url')
}

function boundKey (cnf: unknown): string | undefined {
  if (cnf === undefined) {
    return undefined
  }
  if (typeof cnf !== 'object' || cnf === null) {
    throw WRONG_CLAIM_TYPE
  }
  const { jkt } = cnf as { jkt?: unknown }
  if (jkt !== undefined && typeof jkt !== 'string') {
    throw WRONG_CLAIM_TYPE
  }
  return jkt
}
