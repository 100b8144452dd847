import { generateKeyPairSync, randomUUID, sign, type JsonWebKey, type KeyObject } from 'node:crypto'
import { encodeSegment } from '../tokens/sign.js'
import { ALGORITHM_PARAMETERS, type DpopAlgorithm } from './proof.js'
import { jwkThumbprint } from './thumbprint.js'

export { accessTokenHash } from './binding.js'

/** What a proof states (RFC 9449 §4.2); `iat` and `jti` default to now and a fresh UUID. */
export interface ProofClaims {
  htm: string
  htu: string
  ath?: string
  iat?: number
  jti?: string
  [claim: string]: unknown
}

const KEY_PAIRS: Record<DpopAlgorithm, () => { publicKey: KeyObject, privateKey: KeyObject }> = {
  ES256: () => generateKeyPairSync('ec', { namedCurve: 'P-256' }),
  ES384: () => generateKeyPairSync('ec', { namedCurve: 'P-384' }),
  ES512: () => generateKeyPairSync('ec', { namedCurve: 'P-521' }),
  PS256: () => generateKeyPairSync('rsa', { modulusLength: 2048 }),
  PS384: () => generateKeyPairSync('rsa', { modulusLength: 2048 }),
  PS512: () => generateKeyPairSync('rsa', { modulusLength: 2048 }),
  RS256: () => generateKeyPairSync('rsa', { modulusLength: 2048 }),
  EdDSA: () => generateKeyPairSync('ed25519'),
}

/**
 * The client side of DPoP: a key pair and the proofs made with it. For the example client, tests and the
 * bench; the service itself only verifies proofs.
 */
export class DpopKey {
  readonly jwk: JsonWebKey
  /** The RFC 7638 thumbprint a token bound to this key names in `cnf.jkt`. */
  readonly jkt: string

  private constructor (readonly alg: DpopAlgorithm, readonly privateKey: KeyObject, publicKey: KeyObject) {
    this.jwk = publicKey.export({ format: 'jwk' })
    this.jkt = jwkThumbprint(this.jwk)!
  }

  static generate (alg: DpopAlgorithm = 'ES256'): DpopKey {
    const { publicKey, privateKey } = KEY_PAIRS[alg]()
    return new DpopKey(alg, privateKey, publicKey)
  }

  /** A signed proof; `header` adds to or overrides the header (`typ`, `alg`, `jwk`). */
  proof (claims: ProofClaims, header: Record<string, unknown> = {}): string {
    const input = `${encodeSegment({ typ: 'dpop+jwt', alg: this.alg, jwk: this.jwk, ...header })}.${encodeSegment({ iat: Math.floor(Date.now() / 1000), jti: randomUUID(), ...claims })}`
    const { digest, options } = ALGORITHM_PARAMETERS[this.alg]
    return `${input}.${sign(digest, Buffer.from(input), { key: this.privateKey, ...options }).toString('base64url')}`
  }
}
