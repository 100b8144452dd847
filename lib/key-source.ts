import buildGetJwks from 'get-jwks'
import { AuthError } from './errors.js'

export interface KeySourceOptions {
  /** The configured issuer, ending in `/`. Keys come from `<issuer>.well-known/jwks.json` and nowhere else. */
  issuer: string
  /** Token algorithms allowed; a token asking for another one is refused before any lookup. */
  algorithms: readonly string[]
  /** The deadline of every lookup that has to wait for the issuer. Also the pause after a failed fetch. */
  fetchTimeoutMs: number
  /** After the issuer says it has no key under a kid, no fetch for another unknown kid for this long. */
  unknownKidCooldownMs: number
  /** A known key is checked again with the issuer after this long, in the background. */
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

interface KnownKey {
  pem: string
  revalidateAt: number
}

type FetchOutcome = { pem: string } | 'unknown' | 'unavailable'

const DEFAULT_KEY_MAX_AGE_MS = 10 * 60_000
const MAX_KID_LENGTH = 256
const UNKNOWN_KIDS_MAX = 1000
const DEFAULT_UNKNOWN_KID_TTL_MS = 5 * 60_000
/** The kid the readiness check asks for: the issuer answering "no such key" proves it serves a key set. */
const READINESS_PROBE_KID = 'readiness-probe'

/**
 * The public keys of the one configured issuer, fetched with get-jwks and kept so that the request path
 * normally costs one Map lookup.
 *
 * Around get-jwks it adds what an internet-facing service needs: every fetch has a deadline; one fetch
 * runs at a time and concurrent lookups wait for it; a kid the issuer does not have is remembered (a
 * bounded negative cache) and closes fetching for unknown kids for a cooldown, so a flood of made-up kids
 * costs at most one fetch per window; after a failed fetch, lookups that need the issuer fail fast with
 * `jwks_unavailable` until the pause is over, while known keys keep being served; and a background check
 * at startup makes `ready` true before the first request.
 */
export class KeySource {
  readonly #options: Required<Omit<KeySourceOptions, 'log'>> & Pick<KeySourceOptions, 'log'>
  readonly #keys = new Map<string, KnownKey>()
  readonly #unknownKids = new Map<string, number>()
  readonly #closing = new AbortController()
  #inFlight: Promise<unknown> | undefined
  #fetchPausedUntil = 0
  #pausedBecause: 'unknown_kid' | 'unavailable' = 'unavailable'
  #issuerAnswered = false
  #retryTimer: NodeJS.Timeout | undefined

  constructor (options: KeySourceOptions) {
    this.#options = { keyMaxAgeMs: DEFAULT_KEY_MAX_AGE_MS, unknownKidTtlMs: DEFAULT_UNKNOWN_KID_TTL_MS, ...options }
  }

  get issuer (): string {
    return this.#options.issuer
  }

  /** True once keys can be had: a key is known, or the issuer last answered with a key set. */
  get ready (): boolean {
    return this.#keys.size > 0 || this.#issuerAnswered
  }

  /** The PEM public key for a token's header, or an AuthError: 401 `invalid_token` or 503 `jwks_unavailable`. */
  async getKey (header: TokenHeader): Promise<string> {
    const { alg, kid } = header
    if (typeof alg !== 'string' || !this.#options.algorithms.includes(alg)) {
      throw new AuthError('invalid_token', 'Token algorithm is not allowed')
    }
    if (typeof kid !== 'string' || kid === '' || kid.length > MAX_KID_LENGTH) {
      throw new AuthError('invalid_token', 'Token has no usable key id (kid)')
    }
    const id = `${alg} ${kid}`
    const known = this.#keys.get(id)
    if (known === undefined) {
      return this.#lookUp(alg, kid, id)
    }
    if (Date.now() >= known.revalidateAt) {
      this.#revalidate(alg, kid, id)
    }
    return known.pem
  }

  /** Starts the background check that makes `ready` true; retried until it succeeds. */
  warmUp (): void {
    if (!this.ready && this.#inFlight === undefined && !this.#closing.signal.aborted) {
      void this.#fetch(this.#options.algorithms[0]!, READINESS_PROBE_KID, AbortSignal.timeout(this.#options.fetchTimeoutMs))
    }
  }

  /** Aborts a fetch under way and stops background retries. */
  close (): void {
    this.#closing.abort()
    clearTimeout(this.#retryTimer)
  }

  async #lookUp (alg: string, kid: string, id: string): Promise<string> {
    const deadline = AbortSignal.timeout(this.#options.fetchTimeoutMs)
    // A fetch under way started before this lookup, with the same timeout: it ends before our deadline.
    while (this.#inFlight !== undefined) {
      await this.#inFlight
      const known = this.#keys.get(id)
      if (known !== undefined) {
        return known.pem
      }
    }
    const now = Date.now()
    if (this.#isUnknown(id, now)) {
      throw unknownKey()
    }
    if (now < this.#fetchPausedUntil) {
      throw this.#pausedBecause === 'unknown_kid' ? unknownKey() : this.#unavailable()
    }
    const outcome = await this.#fetch(alg, kid, deadline)
    if (outcome === 'unavailable') {
      throw this.#unavailable()
    }
    if (outcome === 'unknown') {
      this.#rememberUnknown(id)
      this.#pauseFetching('unknown_kid', this.#options.unknownKidCooldownMs)
      throw unknownKey()
    }
    this.#keys.set(id, { pem: outcome.pem, revalidateAt: Date.now() + this.#options.keyMaxAgeMs })
    return outcome.pem
  }

  /** Asks the issuer again about a known key, without holding up the request that noticed it was due. */
  #revalidate (alg: string, kid: string, id: string): void {
    if (this.#inFlight !== undefined || (this.#pausedBecause === 'unavailable' && Date.now() < this.#fetchPausedUntil)) {
      return
    }
    void this.#fetch(alg, kid, AbortSignal.timeout(this.#options.fetchTimeoutMs)).then((outcome) => {
      if (outcome === 'unknown') {
        this.#keys.delete(id) // the issuer withdrew the key
      } else if (outcome !== 'unavailable') {
        this.#keys.set(id, { pem: outcome.pem, revalidateAt: Date.now() + this.#options.keyMaxAgeMs })
      }
      // unavailable: keep serving the known key; the next lookup after the pause tries again
    })
  }

  /** The only place that reaches the issuer. Never throws: it reports what the issuer said. */
  #fetch (alg: string, kid: string, deadline: AbortSignal): Promise<FetchOutcome> {
    const attempt = this.#fetchKey(alg, kid, deadline)
    this.#inFlight = attempt
    void attempt.then(() => {
      if (this.#inFlight === attempt) this.#inFlight = undefined
    })
    return attempt
  }

  async #fetchKey (alg: string, kid: string, deadline: AbortSignal): Promise<FetchOutcome> {
    // A get-jwks client per fetch: get-jwks reads its fetch options once, when it is built, and this is how
    // each fetch gets its own deadline. Its caches go unused: ours keep serving a known key while the issuer
    // is down without waiting for a failing fetch first, and drop a key the issuer has withdrawn, which
    // get-jwks's stale cache would keep serving.
    const getJwks = buildGetJwks({
      issuersWhitelist: [this.#options.issuer],
      fetchOptions: { signal: AbortSignal.any([deadline, this.#closing.signal]) },
    })
    try {
      const pem = await getJwks.getPublicKey({ domain: this.#options.issuer, alg, kid })
      this.#issuerAnswered = true
      return { pem }
    } catch (error) {
      if ((error as { code?: unknown }).code === 'JWK_NOT_FOUND') {
        this.#issuerAnswered = true
        return 'unknown'
      }
      // Down, slow, an error page, an empty or broken key set: all the same to a client.
      this.#issuerAnswered = false
      this.#pauseFetching('unavailable', this.#options.fetchTimeoutMs)
      this.#options.log?.warn({ jwksFailure: describeFailure(error) }, 'could not fetch the issuer\'s signing keys')
      this.#retryWarmUpLater()
      return 'unavailable'
    }
  }

  #pauseFetching (reason: 'unknown_kid' | 'unavailable', ms: number): void {
    this.#pausedBecause = reason
    this.#fetchPausedUntil = Date.now() + ms
  }

  #retryWarmUpLater (): void {
    if (!this.ready && this.#retryTimer === undefined && !this.#closing.signal.aborted) {
      this.#retryTimer = setTimeout(() => {
        this.#retryTimer = undefined
        this.warmUp()
      }, this.#options.fetchTimeoutMs).unref()
    }
  }

  #unavailable (): AuthError {
    const retryAfterSec = Math.max(1, Math.ceil((this.#fetchPausedUntil - Date.now()) / 1000))
    return new AuthError('jwks_unavailable', 'The token issuer\'s signing keys cannot be fetched right now', { retryAfterSec })
  }

  #isUnknown (id: string, now: number): boolean {
    const expiresAt = this.#unknownKids.get(id)
    if (expiresAt !== undefined && now >= expiresAt) {
      this.#unknownKids.delete(id)
      return false
    }
    return expiresAt !== undefined
  }

  #rememberUnknown (id: string): void {
    if (this.#unknownKids.size >= UNKNOWN_KIDS_MAX) {
      this.#unknownKids.delete(this.#unknownKids.keys().next().value!) // the oldest entry
    }
    this.#unknownKids.set(id, Date.now() + this.#options.unknownKidTtlMs)
  }
}

function unknownKey (): AuthError {
  return new AuthError('invalid_token', 'Token signing key is not known')
}

/** What went wrong, for the log: never the upstream body (get-jwks attaches it to its errors). */
function describeFailure (error: unknown): { reason: string, status?: number } {
  const { code, name, response } = error as { code?: unknown, name?: unknown, response?: { status?: number } }
  const reason = typeof code === 'string' ? code : String(name)
  return response?.status === undefined ? { reason } : { reason, status: response.status }
}
