import { constants, createPublicKey, verify, type JsonWebKey, type KeyObject } from 'node:crypto'
import { AuthError } from '../errors.js'
import type { ReplayStore } from './replay-store.js'
import { jwkThumbprint } from './thumbprint.js'

/** How each proof algorithm signs and verifies: its digest, the key type (and curves) it needs, the signature form. */
export const ALGORITHM_PARAMETERS = {
  ES256: { digest: 'sha256', kty: 'EC', curves: ['P-256'], options: { dsaEncoding: 'ieee-p1363' } },
  ES384: { digest: 'sha384', kty: 'EC', curves: ['P-384'], options: { dsaEncoding: 'ieee-p1363' } },
  ES512: { digest: 'sha512', kty: 'EC', curves: ['P-521'], options: { dsaEncoding: 'ieee-p1363' } },
  PS256: { digest: 'sha256', kty: 'RSA', curves: undefined, options: { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST } },
  PS384: { digest: 'sha384', kty: 'RSA', curves: undefined, options: { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST } },
  PS512: { digest: 'sha512', kty: 'RSA', curves: undefined, options: { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST } },
  RS256: { digest: 'sha256', kty: 'RSA', curves: undefined, options: {} },
  EdDSA: { digest: null, kty: 'OKP', curves: ['Ed25519', 'Ed448'], options: {} },
} as const

/** Every asymmetric algorithm Node verifies that RFC 9449 proofs use. */
export const DPOP_ALGORITHMS = Object.keys(ALGORITHM_PARAMETERS) as (keyof typeof ALGORITHM_PARAMETERS)[]
export type DpopAlgorithm = keyof typeof ALGORITHM_PARAMETERS

/** What a proof must match: the request, and the access token it comes with (none at a token endpoint). */
export interface ProofExpectation {
  method: string
  /** The request's URL as the proof's `htu` must state it, without query or fragment. */
  url: string
  /** base64url SHA-256 of the access token (`ath`); a proof without a token must have none. */
  accessTokenHash?: string | undefined
  /** The thumbprint the access token is bound to (`cnf.jkt`); any key without a token. */
  jkt?: string | undefined
}

export interface ProofCheckerOptions {
  algorithms: readonly DpopAlgorithm[]
  /** How old a proof's `iat` may be. */
  maxAgeSec: number
  /** How far in the future a proof's `iat` may be. */
  clockToleranceSec: number
  replays: ReplayStore
  /** How many proof headers (and URLs) are remembered parsed. */
  cacheSize?: number
}

interface ProofKey {
  alg: DpopAlgorithm
  jkt: string
  key: KeyObject
}

const invalid = (description: string): AuthError => new AuthError('invalid_dpop_proof', description)
// Fixed answers are made once: a flood of bad proofs should cost no stack traces.
const MISSING = invalid('DPoP proof is missing')
const MALFORMED = invalid('DPoP proof must be one compact JWT')
const NOT_A_PROOF = invalid('DPoP proof typ must be dpop+jwt')
const ALGORITHM = invalid('DPoP proof algorithm is not allowed')
const KEY = invalid('DPoP proof jwk must be a public key of its algorithm')
const SIGNATURE = invalid('DPoP proof signature is invalid')
const METHOD = invalid('DPoP proof htm does not match the request method')
const URL_MISMATCH = invalid('DPoP proof htu does not match the request URL')
const TIME = invalid('DPoP proof iat is outside the accepted window')
const ID = invalid('DPoP proof jti is missing or too long')
const TOKEN_HASH = invalid('DPoP proof ath does not match the access token')
const KEY_MISMATCH = invalid('DPoP proof key is not the one the token is bound to')
const REPLAYED = invalid('DPoP proof has been used before')
const BUSY = new AuthError('overloaded', 'Too many DPoP proofs to remember right now', { retryAfterSec: 5 })

const COMPACT_JWT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/
const MAX_PROOF_LENGTH = 8192
const MAX_JTI_LENGTH = 256
const MIN_RSA_BITS = 2048
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k']

/**
 * Checks DPoP proofs (RFC 9449 §4.3) for requests to a protected resource: one compact JWT, `typ`
 * dpop+jwt, an allowed asymmetric `alg`, a signature by the public key in its own `jwk`, `htm` and `htu`
 * naming this request, a recent `iat`, the `ath` of the access token, the key the token is bound to, and a
 * `jti` never seen before. A client's proofs share one header, so each header is parsed, its key imported
 * and its thumbprint computed once; what is left per request is the payload and the signature.
 */
export class ProofChecker {
  readonly #keys = new Map<string, ProofKey>()
  readonly #urls = new Map<string, string>()
  readonly #algorithms: ReadonlySet<string>
  readonly #cacheSize: number

  constructor (readonly options: ProofCheckerOptions) {
    this.#algorithms = new Set(options.algorithms)
    this.#cacheSize = options.cacheSize ?? 10_000
  }

  /** Checks the request's DPoP header against `expected` and returns its key's thumbprint, or throws `invalid_dpop_proof`. */
  check (proof: string | undefined, expected: ProofExpectation, nowMs: number): string {
    if (proof === undefined) {
      throw MISSING
    }
    if (proof.length > MAX_PROOF_LENGTH || !COMPACT_JWT.test(proof)) {
      throw MALFORMED // two DPoP headers arrive joined by a comma, so they end here too
    }
    const [header, payload, signature] = proof.split('.') as [string, string, string]
    const { alg, jkt, key } = this.#keyOf(header)
    if (expected.jkt !== undefined && jkt !== expected.jkt) {
      throw KEY_MISMATCH
    }
    const claims = parseSegment(payload)
    if (claims === undefined) {
      throw MALFORMED
    }
    if (claims.htm !== expected.method) {
      throw METHOD
    }
    const url = this.normalizeUrl(expected.url)
    if (typeof claims.htu !== 'string' || url === '' || this.normalizeUrl(claims.htu) !== url) {
      throw URL_MISMATCH
    }
    const nowSec = nowMs / 1000
    if (typeof claims.iat !== 'number' || claims.iat < nowSec - this.options.maxAgeSec || claims.iat > nowSec + this.options.clockToleranceSec) {
      throw TIME
    }
    if (claims.ath !== expected.accessTokenHash) {
      throw TOKEN_HASH
    }
    if (typeof claims.jti !== 'string' || claims.jti === '' || claims.jti.length > MAX_JTI_LENGTH) {
      throw ID
    }
    const { digest, options } = ALGORITHM_PARAMETERS[alg]
    if (!verify(digest, Buffer.from(`${header}.${payload}`), { key, ...options }, Buffer.from(signature, 'base64url'))) {
      throw SIGNATURE
    }
    // Last, so that only genuine proofs take room in the store.
    const seen = this.options.replays.remember(jkt, claims.jti, nowMs)
    if (seen !== 'fresh') {
      throw seen === 'replayed' ? REPLAYED : BUSY
    }
    return jkt
  }

  /** The key of a proof header: from memory, or checked and imported once. */
  #keyOf (segment: string): ProofKey {
    let known = this.#keys.get(segment)
    if (known === undefined) {
      known = this.#importKey(parseSegment(segment))
      if (this.#keys.size >= this.#cacheSize) {
        this.#keys.delete(this.#keys.keys().next().value!) // the oldest
      }
      this.#keys.set(segment, known)
    }
    return known
  }

  #importKey (header: Record<string, unknown> | undefined): ProofKey {
    if (typeof header?.typ !== 'string' || header.typ.toLowerCase() !== 'dpop+jwt') {
      throw NOT_A_PROOF
    }
    const { alg, jwk } = header as { alg: unknown, jwk: unknown }
    if (typeof alg !== 'string' || !this.#algorithms.has(alg)) {
      throw ALGORITHM
    }
    const { kty, curves } = ALGORITHM_PARAMETERS[alg as DpopAlgorithm]
    if (typeof jwk !== 'object' || jwk === null || PRIVATE_MEMBERS.some((member) => member in jwk)) {
      throw KEY
    }
    const { kty: keyType, crv } = jwk as JsonWebKey
    const jkt = jwkThumbprint(jwk as JsonWebKey)
    if (keyType !== kty || (curves !== undefined && !(curves as readonly unknown[]).includes(crv)) || jkt === undefined) {
      throw KEY
    }
    let key: KeyObject
    try {
      key = createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' })
    } catch {
      throw KEY
    }
    if (kty === 'RSA' && key.asymmetricKeyDetails!.modulusLength! < MIN_RSA_BITS) {
      throw KEY
    }
    return { alg: alg as DpopAlgorithm, jkt, key }
  }

  /**
   * A URL as RFC 3986 §6.2.2 compares it: scheme and host in lower case, no default port, dot segments
   * resolved, escapes of unreserved characters decoded and the others in upper case; '' if it is no URL.
   * Clients repeat their URLs, so results are remembered.
   */
  normalizeUrl (value: string): string {
    let normal = this.#urls.get(value)
    if (normal === undefined) {
      normal = URL.parse(value)?.href.replace(/%[0-9a-f]{2}/gi, normalizeEscape) ?? ''
      if (this.#urls.size >= this.#cacheSize) {
        this.#urls.clear()
      }
      this.#urls.set(value, normal)
    }
    return normal
  }
}

function normalizeEscape (escape: string): string {
  const character = String.fromCharCode(Number.parseInt(escape.slice(1), 16))
  return /[A-Za-z0-9\-._~]/.test(character) ? character : escape.toUpperCase()
}

/** A base64url JSON segment as an object, or undefined. */
function parseSegment (segment: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(Buffer.from(segment, 'base64url').toString())
    return typeof value === 'object' && value !== null ? value as Record<string, unknown> : undefined
  } catch {
    return undefined
  }
}
