import { holds, type Remembered } from './outcome-cache.js'

// V8 hashes a string's whole text only up to this length; a longer one hashes to its length alone, so that
// many of them would share one hash chain. None is kept here.
const MAX_HASHED_LENGTH = 16_383

/**
 * Outcomes of tokens in use, by the raw text of their Authorization header, for seconds: a token that is
 * being reused costs one `Map` lookup (the string hash V8 computes for it) instead of a SHA-256 in
 * OpenSSL. Raw headers are kept in two generations that a timer moves on every `lifetimeMs`, so a header
 * is held for at most two lifetimes after it was added, whether or not it is used again; a token still in
 * use is added again from the outcome cache, which keeps only hashes. Only outcomes already remembered by
 * hash are offered, so a flood of new tokens adds nothing here. Bounded in bytes per generation.
 */
export class RecentHeaders<T extends Remembered> {
  #current = new Map<string, T>()
  #previous = new Map<string, T>()
  #bytes = 0
  readonly #timer: NodeJS.Timeout

  constructor (lifetimeMs: number, readonly maxBytes: number) {
    this.#timer = setInterval(() => this.#moveOn(), lifetimeMs).unref()
  }

  get (header: string, now: number, version: number): T | undefined {
    const outcome = this.#current.get(header) ?? this.#previous.get(header)
    return outcome !== undefined && holds(outcome, now, version) ? outcome : undefined
  }

  set (header: string, outcome: T): void {
    if (header.length > MAX_HASHED_LENGTH || this.#bytes + header.length > this.maxBytes) {
      return
    }
    this.#current.set(header, outcome)
    this.#bytes += header.length
  }

  /** Drops every header and stops the timer. */
  close (): void {
    clearInterval(this.#timer)
    this.#current.clear()
    this.#previous.clear()
  }

  #moveOn (): void {
    this.#previous = this.#current
    this.#current = new Map()
    this.#bytes = 0
  }
}
