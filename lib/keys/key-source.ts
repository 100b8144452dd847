import { createPublicKey, type JsonWebKey } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { AuthError } from './errors.js'

export interface KeySourceOptions {
  /** The configured issuer, as tokens state it in `iss`. */
  issuer: string
  /** Where its keys are, from configuration only; `<issuer>.well-known/jwks.json` by default. */
  jwksUrl?: string | undefined
  /** Token algorithms allowed; a token asking for another one is refused before any lookup. */
  algorithms: readonly string[]
  /** The deadline of every fetch of the key set. Also the pause after a failed fetch. */
  fetchTimeoutMs: number
  /** An unknown kid fetches the key set again only if the set in hand is older than this. */
  unknownKidCooldownMs: number
  /** A key set older than this is fetched again in the background when a token next needs it. */
  keyMaxAgeMs?: number
  /** How long a kid the issuer did not have is answered from memory. */
  unknownKidTtlMs?: number
  log?: { warn: (details: object, message: string) => void }
}

/** The JOSE header fields the lookup reads. `jku`, `x5u` and `jwk` are never followed. */
export interface TokenHeader {
  alg?: unknown
  kid?: unknown
}

interface PublicKey {
  pem: string
  /** The key's own `alg`, when the JWKS states one: then only that algorithm may use it. */
  alg: string | undefined
}

// Fixed answers are made once: a flood of bad tokens should cost no stack traces.
const ALGORITHM_NOT_ALLOWED = new AuthError('invalid_token', 'Token algorithm is not allowed')
const NO_USABLE_KID = new AuthError('invalid_token', 'Token has no usable key id (kid)')
const ALGORITHM_MISMATCH = new AuthError('invalid_token', 'Token algorithm does not match its key')
const UNKNOWN_KEY = new AuthError('invalid_token', 'Token signing key is not known', { permanent: false }) // it may be published later

const DEFAULT_KEY_MAX_AGE_MS = 10 * 60_000
const DEFAULT_UNKNOWN_KID_TTL_MS = 5 * 60_000
const MAX_KID_LENGTH = 256
const UNKNOWN_KIDS_MAX = 1000
const MAX_JWKS_BYTES = 1024 * 1024
/** RSA keys shorter than this are refused (NIST SP 800-131A); a malformed modulus can even parse as 0 bits. */
const MIN_RSA_BITS = 2048

/**
 * The public keys of the one configured issuer, held in memory so that the request path costs one Map
 * lookup. The whole key set is fetched at once (at startup, when it grows old, and for an unknown kid), so
 * one fetch brings every key the issuer publishes.
 *
 * What an internet-facing service needs around that fetch: a deadline on every fetch, and one at a time
 * (lookups arriving meanwhile wait for it); an unknown kid refetches only when the set in hand is older than
 * the cooldown and is then remembered (a bounded negative cache), so a flood of made-up kids costs at most
 * one fetch per window and cannot keep genuine kids out; while the issuer is down or broken, the keys in
 * hand keep being served and lookups that need the issuer fail fast with `jwks_unavailable`; and `ready`
 * turns true as soon as the startup fetch has loaded keys, retried until it does.
 */
export class KeySource {
  readonly #options: Required<Omit<KeySourceOptions, 'log' | 'jwksUrl'>> & Pick<KeySourceOptions, 'log'>
  readonly #jwksUrl: string
  #keys = new Map<string, PublicKey>()
  #fetchedAt = -Infinity
  /** Fetches started so far, and which of them brought the key set in hand. */
  #fetchesStarted = 0
  #setFromFetch = 0
  #version = 0
  readonly #unknownKids = new Map<string, number>()
  readonly #closing = new AbortController()
  #inFlight: Promise<void> | undefined
  #failedUntil = 0
  #retryTimer: NodeJS.Timeout | undefined

  constructor (options: KeySourceOptions) {
    this.#options = { keyMaxAgeMs: DEFAULT_KEY_MAX_AGE_MS, unknownKidTtlMs: DEFAULT_UNKNOWN_KID_TTL_MS, ...options }
    const { issuer } = options
    this.#jwksUrl = options.jwksUrl ?? `${issuer}${issuer.endsWith('/') ? '' : '/'}.well-known/jwks.json`
  }

  get issuer (): string {
    return this.#options.issuer
  }

  /** True once keys are loaded. They stay loaded while the issuer is down. */
  get ready (): boolean {
    return this.#keys.size > 0
  }

  /** Changes whenever a key is withdrawn or replaced, so that anything derived from the old keys can be dropped. */
  get version (): number {
    return this.#version
  }

  /** The PEM public key for a token's header, or an AuthError: 401 `invalid_token` or 503 `jwks_unavailable`. */
  async getKey (header: TokenHeader): Promise<string> {
    const { alg, kid } = header
    if (typeof alg !== 'string' || !this.#options.algorithms.includes(alg)) {
      throw ALGORITHM_NOT_ALLOWED
    }
    if (typeof kid !== 'string' || kid === '' || kid.length > MAX_KID_LENGTH) {
      throw NO_USABLE_KID
    }
    const key = this.#keys.get(kid) ?? await this.#lookUpUnknown(kid)
    this.renewIfOld()
    if (key.alg !== undefined && key.alg !== alg) {
      throw ALGORITHM_MISMATCH
    }
    return key.pem
  }

  /**
   * Fetches the key set in the background if it is older than `keyMaxAgeMs`. Called for every token, also
   * those answered from a cache, so that a withdrawn key stops working on time however busy the cache is.
   */
  renewIfOld (): void {
    if (performance.now() - this.#fetchedAt >= this.#options.keyMaxAgeMs) {
      void this.#refresh() // the request that noticed is served with the keys in hand
    }
  }

  /** Starts the background fetch that makes `ready` true; retried until it succeeds. */
  warmUp (): void {
    if (!this.ready) {
      void this.#refresh()
    }
  }

  /** Aborts a fetch under way and stops background retries. */
  close (): void {
    this.#closing.abort()
    clearTimeout(this.#retryTimer)
  }

  async #lookUpUnknown (kid: string): Promise<PublicKey> {
    const fetchesBefore = this.#fetchesStarted
    if (this.#inFlight !== undefined) {
      await this.#inFlight
    } else if (!this.#isRemembered(kid) && performance.now() - this.#fetchedAt >= this.#options.unknownKidCooldownMs) {
      await this.#refresh()
    }
    const key = this.#keys.get(kid)
    if (key !== undefined) {
      return key
    }
    if (performance.now() < this.#failedUntil && !this.#isRemembered(kid)) {
      throw new AuthError('jwks_unavailable', 'The token issuer\'s signing keys cannot be fetched right now', {
        retryAfterSec: Math.max(1, Math.ceil((this.#failedUntil - performance.now()) / 1000)),
      })
    }
    if (this.#setFromFetch > fetchesBefore) {
      // Only a fetch that started after this kid was seen proves it absent: one already under way, or none
      // within the cooldown, may predate its publication.
      this.#remember(kid)
    }
    throw UNKNOWN_KEY
  }

  /** Fetches the key set, one fetch at a time and none during the pause after a failure. Never rejects. */
  #refresh (): Promise<void> {
    if (this.#inFlight === undefined && performance.now() >= this.#failedUntil && !this.#closing.signal.aborted) {
      const attempt = this.#fetchKeySet(++this.#fetchesStarted)
      this.#inFlight = attempt
      void attempt.then(() => { this.#inFlight = undefined })
    }
    return this.#inFlight ?? Promise.resolve()
  }

  async #fetchKeySet (fetchNumber: number): Promise<void> {
    try {
      const response = await fetch(this.#jwksUrl, {
        headers: { accept: 'application/json' },
        redirect: 'error',
        signal: AbortSignal.any([AbortSignal.timeout(this.#options.fetchTimeoutMs), this.#closing.signal]),
      })
      if (!response.ok) {
        throw new JwksError(`status ${response.status}`)
      }
      this.#install(parseKeySet(await readBody(response, MAX_JWKS_BYTES)), fetchNumber)
    } catch (error) {
      this.#failedUntil = performance.now() + this.#options.fetchTimeoutMs
      if (!this.#closing.signal.aborted) {
        this.#options.log?.warn({ jwksUrl: this.#jwksUrl, reason: describeFailure(error) }, 'could not fetch the issuer\'s signing keys')
        this.#retryUntilReady()
      }
    }
  }

  #install (keys: Map<string, PublicKey>, fetchNumber: number): void {
    for (const [kid, key] of this.#keys) {
      const next = keys.get(kid)
      if (next?.pem !== key.pem || next.alg !== key.alg) {
        this.#version++ // a key was withdrawn or replaced
        break
      }
    }
    this.#keys = keys
    this.#fetchedAt = performance.now()
    this.#setFromFetch = fetchNumber
    for (const kid of keys.keys()) {
      this.#unknownKids.delete(kid)
    }
  }

  #retryUntilReady (): void {
    if (!this.ready && this.#retryTimer === undefined) {
      this.#retryTimer = setTimeout(() => {
        this.#retryTimer = undefined
        this.#failedUntil = 0 // the pause is over: a timer may fire a moment before the clock says so
        this.warmUp()
      }, this.#options.fetchTimeoutMs).unref()
    }
  }

  #isRemembered (kid: string): boolean {
    const expiresAt = this.#unknownKids.get(kid)
    if (expiresAt !== undefined && performance.now() >= expiresAt) {
      this.#unknownKids.delete(kid)
      return false
    }
    return expiresAt !== undefined
  }

  #remember (kid: string): void {
    this.#unknownKids.delete(kid)
    if (this.#unknownKids.size >= UNKNOWN_KIDS_MAX) {
      this.#unknownKids.delete(this.#unknownKids.keys().next().value!) // the oldest entry
    }
    this.#unknownKids.set(kid, performance.now() + this.#options.unknownKidTtlMs)
  }
}

/** A key set the issuer answered with but that cannot be used. */
class JwksError extends Error {
  override name = 'JwksError'
}

/** The response body as text, refusing to hold more than `limit` bytes (a key set is a few KiB). */
async function readBody (response: Response, limit: number): Promise<string> {
  const chunks: Uint8Array[] = []
  let size = 0
  for await (const chunk of response.body ?? []) {
    size += chunk.byteLength
    if (size > limit) {
      throw new JwksError('key set too large')
    }
    chunks.push(chunk)
  }
  return Buffer.concat(chunks).toString('utf8')
}

/** The signing keys of a JWKS document (RFC 7517), converted once to PEM; keys that cannot be used are skipped. */
function parseKeySet (text: string): Map<string, PublicKey> {
  let document: unknown
  try {
    document = JSON.parse(text)
  } catch {
    throw new JwksError('not JSON')
  }
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
    throw new JwksError('no usable signing key')
  }
  return keys
}

/** What went wrong, for the log: a reason, never the body the issuer sent. */
function describeFailure (error: unknown): string {
  const { name, message, cause } = error as Error & { cause?: { code?: string, message?: string } }
  if (error instanceof JwksError) {
    return message
  }
  return cause?.code ?? cause?.message ?? name // ECONNREFUSED, ENOTFOUND, a TLS error code, TimeoutError ...
}
