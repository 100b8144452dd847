import { performance } from 'node:perf_hooks'
import { Agent, type Dispatcher } from 'undici'
import { AuthError } from '../errors.js'
import { discoverJwksUri, UnusableIssuer } from './discovery.js'
import { describeFailure, getJson } from './http.js'
import { changesKeys, parseKeySet, type PublicKey } from './jwks.js'

export interface KeySourceOptions {
  /** The issuer, exactly as its tokens state it in `iss`. */
  issuer: string
  /** Where its keys are, from configuration; without it, the `jwks_uri` of the issuer's metadata. */
  jwksUrl?: string | undefined
  /** Token algorithms allowed; a token asking for another one is refused before any lookup. */
  algorithms: readonly string[]
  /** The deadline of every refresh (metadata and key set together). Also the pause after a failed one. */
  fetchTimeoutMs: number
  /** An unknown kid fetches the key set again only if the set in hand is older than this. */
  unknownKidCooldownMs: number
  /** The key set (and the metadata) is fetched again in the background once older than this. */
  keyMaxAgeMs?: number
  /** How long a kid the issuer did not have is answered from memory. */
  unknownKidTtlMs?: number
  /** A discovered `jwks_uri` may be plain http on a loopback host (never in production). */
  allowLoopbackHttp?: boolean
  /** How requests leave the process (a proxy, or direct); its owner closes it. Without one, a direct agent of its own. */
  dispatcher?: Dispatcher
  /** Called whenever a key is withdrawn or replaced. */
  onChange?: () => void
  /** Called after every fetch of the key set (with its metadata), for metrics. */
  onFetch?: (fetch: { issuer: string, ok: boolean, seconds: number }) => void
  log?: {
    warn: (details: object, message: string) => void
    info?: (details: object, message: string) => void
  }
}

/** The JOSE header fields the lookup reads. `jku`, `x5u` and `jwk` are never followed. */
export interface TokenHeader {
  alg?: unknown
  kid?: unknown
}

/**
 * `loading`: no fetch has finished yet; `ready`: keys in hand and the last fetch succeeded; `stale`: keys in
 * hand but the last fetch failed; `unavailable`: no keys, the issuer could not be reached or answered badly;
 * `unusable`: no keys, the issuer's metadata cannot be trusted (another issuer, no https jwks_uri).
 */
export type IssuerState = 'loading' | 'ready' | 'stale' | 'unavailable' | 'unusable'

export interface IssuerStatus {
  issuer: string
  state: IssuerState
  keys: number
  /** Why the last fetch failed, as logged. */
  reason?: string
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
const MAX_DOCUMENT_BYTES = 1024 * 1024

/**
 * The public keys of one issuer, held in memory so that a token's lookup costs one Map lookup. The whole key
 * set is fetched at once (at startup, on a timer once it is `keyMaxAgeMs` old, and for an unknown kid), so
 * one fetch brings every key the issuer publishes; without a configured JWKS URL its location comes from the
 * issuer's metadata (OIDC Discovery or RFC 8414), refreshed on the same timer.
 *
 * What an internet-facing service needs around that: one deadline per refresh and one refresh at a time
 * (lookups arriving meanwhile wait for it); an unknown kid refetches only when the set in hand is older than
 * the cooldown and is then remembered (a bounded negative cache), so a flood of made-up kids costs at most
 * one fetch per window and cannot keep genuine kids out; while the issuer is down or broken, the keys in hand
 * keep being served, lookups that need the issuer fail fast with `jwks_unavailable`, and a bad document
 * never replaces a good set; failures are logged once per reason, and retried on the timer.
 */
export class KeySource {
  readonly #options: Required<Omit<KeySourceOptions, 'log' | 'jwksUrl' | 'onChange' | 'onFetch' | 'dispatcher'>> & Pick<KeySourceOptions, 'log' | 'jwksUrl' | 'onChange' | 'onFetch'>
  readonly #dispatcher: Dispatcher
  readonly #ownDispatcher: boolean
  #keys = new Map<string, PublicKey>()
  #fetchedAt = -Infinity
  /** The metadata's `jwks_uri` and when it was read. */
  #discovered: { jwksUri: string, at: number } | undefined
  /** Fetches started so far, and which of them brought the key set in hand. */
  #fetchesStarted = 0
  #setFromFetch = 0
  #version = 0
  readonly #unknownKids = new Map<string, number>()
  readonly #closing = new AbortController()
  #inFlight: Promise<void> | undefined
  #failedUntil = 0
  #failure: { reason: string, unusable: boolean } | undefined
  #timer: NodeJS.Timeout | undefined
  #succeededAt: number | undefined
  /** Lookups of a kid not in the key set in hand (each may or may not fetch). */
  unknownKidLookups = 0

  constructor (options: KeySourceOptions) {
    this.#options = { keyMaxAgeMs: DEFAULT_KEY_MAX_AGE_MS, unknownKidTtlMs: DEFAULT_UNKNOWN_KID_TTL_MS, allowLoopbackHttp: false, ...options }
    this.#ownDispatcher = options.dispatcher === undefined
    this.#dispatcher = options.dispatcher ?? new Agent()
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

  get status (): IssuerStatus {
    const failure = this.#failure
    const state: IssuerState = this.ready
      ? (failure ? 'stale' : 'ready')
      : (failure ? (failure.unusable ? 'unusable' : 'unavailable') : 'loading')
    return { issuer: this.issuer, state, keys: this.#keys.size, ...(failure && { reason: failure.reason }) }
  }

  /** Seconds since the key set was last fetched successfully; undefined before the first time. */
  get secondsSinceSuccess (): number | undefined {
    return this.#succeededAt === undefined ? undefined : (performance.now() - this.#succeededAt) / 1000
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
    if (key.alg !== undefined && key.alg !== alg) {
      throw ALGORITHM_MISMATCH
    }
    return key.pem
  }

  /** Starts the first fetch in the background; from then on the timer keeps the set fresh. */
  warmUp (): void {
    if (this.#fetchesStarted === 0) {
      void this.#refresh()
    }
  }

  /** Aborts a fetch under way and stops the timer. */
  async close (): Promise<void> {
    this.#closing.abort()
    clearTimeout(this.#timer)
    if (this.#ownDispatcher) {
      await this.#dispatcher.close()
    }
  }

  async #lookUpUnknown (kid: string): Promise<PublicKey> {
    this.unknownKidLookups++
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
    // Only a fetch that started after this kid was seen proves it absent: one already under way, or none
    // within the cooldown, may predate its publication.
    if (this.#setFromFetch > fetchesBefore) {
      this.#remember(kid)
    } else if (this.#setFromFetch !== this.#fetchesStarted && !this.#isRemembered(kid)) {
      // The last fetch failed (or was cut short by close()). Judged by that, not by the clock: the pause
      // after a failure may end between the refresh this lookup skipped and here, and a valid token then
      // got a 401 during a cold start (once in 500 requests, in one drill run on a slowed host).
      throw new AuthError('jwks_unavailable', 'The token issuer\'s signing keys cannot be fetched right now', {
        retryAfterSec: Math.max(1, Math.ceil((this.#failedUntil - performance.now()) / 1000)),
      })
    }
    throw UNKNOWN_KEY
  }

  /**
   * Fetches the key set, one fetch at a time and none during the pause after a failure. Never rejects.
   * `renewal`: the timer's refresh of an old set, which asks for the metadata again too.
   */
  #refresh (renewal = false): Promise<void> {
    if (this.#inFlight === undefined && performance.now() >= this.#failedUntil && !this.#closing.signal.aborted) {
      const attempt = this.#fetchKeySet(++this.#fetchesStarted, renewal)
      this.#inFlight = attempt
      void attempt.then(() => {
        this.#inFlight = undefined
        this.#schedule()
      })
    }
    return this.#inFlight ?? Promise.resolve()
  }

  async #fetchKeySet (fetchNumber: number, renewal: boolean): Promise<void> {
    // Not AbortSignal.timeout: inside AbortSignal.any, Node 20 may collect it before it fires (nodejs/node#57736),
    // and a hanging issuer would then hold lookups for good. This timer holds its controller until cleared.
    const deadline = new AbortController()
    const timer = setTimeout(() => deadline.abort(new DOMException('The fetch took too long', 'TimeoutError')), this.#options.fetchTimeoutMs)
    const signal = AbortSignal.any([deadline.signal, this.#closing.signal])
    const request = { dispatcher: this.#dispatcher, signal, maxBytes: MAX_DOCUMENT_BYTES }
    const started = performance.now()
    const report = (ok: boolean): void => this.#options.onFetch?.({ issuer: this.issuer, ok, seconds: (performance.now() - started) / 1000 })
    try {
      const keys = parseKeySet(await getJson(await this.#jwksUrl(request, renewal), request))
      if (changesKeys(this.#keys, keys)) {
        this.#version++
        this.#options.onChange?.()
      }
      this.#keys = keys
      this.#fetchedAt = this.#succeededAt = performance.now()
      this.#setFromFetch = fetchNumber
      for (const kid of keys.keys()) {
        this.#unknownKids.delete(kid)
      }
      if (this.#failure !== undefined) {
        this.#options.log?.info?.({ issuer: this.issuer, keys: keys.size }, 'the issuer\'s signing keys are fetched again')
      }
      this.#failure = undefined
      report(true)
    } catch (error) {
      this.#failedUntil = performance.now() + this.#options.fetchTimeoutMs
      if (!this.#closing.signal.aborted) {
        this.#failed(error)
        report(false)
      }
    } finally {
      clearTimeout(timer)
    }
  }

  /**
   * The configured JWKS URL, or the discovered one (kept while discovery fails for a reason that can pass).
   * A renewal always asks again: by the age alone, a timer firing a moment early skipped one.
   */
  async #jwksUrl (request: Parameters<typeof getJson>[1], renewal: boolean): Promise<string> {
    const configured = this.#options.jwksUrl
    if (configured !== undefined) {
      return configured
    }
    const known = this.#discovered
    if (known !== undefined && !renewal && performance.now() - known.at < this.#options.keyMaxAgeMs) {
      return known.jwksUri
    }
    try {
      const jwksUri = await discoverJwksUri(this.issuer, this.#options.allowLoopbackHttp, request)
      this.#discovered = { jwksUri, at: performance.now() }
      return jwksUri
    } catch (error) {
      if (known === undefined || error instanceof UnusableIssuer || request.signal.aborted) {
        throw error
      }
      this.#options.log?.warn({ issuer: this.issuer, reason: describeFailure(error) }, 'could not refresh the issuer\'s metadata; using the jwks_uri it gave before')
      return known.jwksUri
    }
  }

  /** Logs a failure once per reason: a long outage is one line, not one per retry. */
  #failed (error: unknown): void {
    const reason = describeFailure(error)
    if (this.#failure?.reason !== reason) {
      const unusable = error instanceof UnusableIssuer
      this.#options.log?.warn({ issuer: this.issuer, reason }, unusable ? 'the issuer cannot be used: its metadata is not trustworthy' : 'could not fetch the issuer\'s signing keys')
      this.#failure = { reason, unusable }
    }
  }

  /** The next fetch: when the set grows old, or when the pause after a failure ends while it is old or missing. */
  #schedule (): void {
    clearTimeout(this.#timer)
    if (this.#closing.signal.aborted) {
      return
    }
    const dueAt = Math.max(this.#fetchedAt + this.#options.keyMaxAgeMs, this.#failedUntil)
    this.#timer = setTimeout(() => {
      this.#failedUntil = 0 // the pause is over: a timer may fire a moment before the clock says so
      void this.#refresh(true)
    }, Math.max(0, dueAt - performance.now())).unref()
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
