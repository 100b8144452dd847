import { hash, type JsonWebKey } from 'node:crypto'

/** The members RFC 7638 §3.2 hashes for each key type, in lexicographic order. */
const REQUIRED_MEMBERS: Record<string, readonly string[]> = {
  EC: ['crv', 'kty', 'x', 'y'],
  RSA: ['e', 'kty', 'n'],
  OKP: ['crv', 'kty', 'x'],
}

/**
 * The RFC 7638 JWK thumbprint (SHA-256, base64url) of a public key: what a DPoP-bound token names in
 * `cnf.jkt`. Undefined for a key type without one here, or a required member that is not a string.
 */
export function jwkThumbprint (jwk: JsonWebKey): string | undefined {
  const members = REQUIRED_MEMBERS[jwk.kty as string]
  if (members === undefined || !members.every((member) => typeof jwk[member] === 'string')) {
    return undefined
  }
  const canonical = `{${members.map((member) => `"${member}":${JSON.stringify(jwk[member])}`).join(',')}}`
  return hash('sha256', canonical, 'base64url')
}
