import { createPublicKey, type JsonWebKey } from 'node:crypto'
import { FetchError } from './http.js'

/** A signing key of the issuer, converted once to the PEM the verifier takes. */
export interface PublicKey {
  pem: string
  /** The key's own `alg`, when the JWKS states one: then only that algorithm may use it. */
  alg: string | undefined
}

/** RSA keys shorter than this are refused (NIST SP 800-131A); a malformed modulus can even parse as 0 bits. */
const MIN_RSA_BITS = 2048

/**
 * The signing keys of a JWKS document (RFC 7517) by kid. Keys that cannot be used are skipped: no kid,
 * `use` other than `sig`, a type other than RSA or EC, a malformed or weak key. A set with no usable key is
 * a FetchError, so that it never replaces a set in hand.
 */
export function parseKeySet (document: unknown): Map<string, PublicKey> {
  const jwks = (document as { keys?: unknown } | null)?.keys
  const keys = new Map<string, PublicKey>()
  for (const jwk of Array.isArray(jwks) ? jwks as unknown[] : []) {
    if (typeof jwk !== 'object' || jwk === null) {
      continue
    }
    const { kid, use, alg, kty } = jwk as JsonWebKey
    if (typeof kid !== 'string' || (use !== undefined && use !== 'sig') || (kty !== 'RSA' && kty !== 'EC')) {
      continue
    }
    try {
      const key = createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' })
      if (kty === 'EC' || key.asymmetricKeyDetails!.modulusLength! >= MIN_RSA_BITS) {
        keys.set(kid, { pem: key.export({ type: 'spki', format: 'pem' }).toString(), alg: typeof alg === 'string' ? alg : undefined })
      }
    } catch {
      // a malformed key: skipped, like one of an unsupported type or a weak RSA key
    }
  }
  if (keys.size === 0) {
    throw new FetchError('no usable signing key')
  }
  return keys
}

/** True if `next` withdraws or changes a key of `current` (a key only added changes nothing remembered). */
export function changesKeys (current: ReadonlyMap<string, PublicKey>, next: ReadonlyMap<string, PublicKey>): boolean {
  for (const [kid, key] of current) {
    const replacement = next.get(kid)
    if (replacement?.pem !== key.pem || replacement.alg !== key.alg) {
      return true
    }
  }
  return false
}
