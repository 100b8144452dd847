const SEEN_SLOTS = 1 << 16

/** What an outcome is good for: until `expiresAt` (ms), and only while the key set is at `version`. */
export interface Remembered {
  expiresAt: number
  version: number
}

/** Whether a remembered outcome still holds at `now` for the key set at `version`. */
export function holds (outcome: Remembered, now: number, version: number): boolean {
  return now < outcome.expiresAt && outcome.version === version
}

interface Entry<T> {
  value: T
  bytes: number
}

/**
 * A bounded map from a token's hash to what verifying it gave, for as long as that outcome `holds`. Bounded
 * both in entries and in bytes (the caller states what an entry weighs: a token with hundreds of permissions
 * weighs more than one with a scope), so that no mix of valid tokens can make it outgrow its budget. Keys
 * must be hashes (uniformly random strings): their first characters serve as a fingerprint.
 *
 * An outcome is stored the second time it is offered: a client that reuses its token gets it remembered
 * from its third request on, while a token seen once (most of a flood of new tokens) leaves nothing behind
 * that would outlive the request and churn the garbage collector. A fixed table of fingerprints records
 * the first sightings; a collision only stores an outcome early. When full, the oldest entries go first
 * (insertion order): a hit costs no bookkeeping.
 */
export class OutcomeCache<T extends Remembered> {
  readonly #entries = new Map<string, Entry<T>>()
  readonly #seen = new Int32Array(SEEN_SLOTS)
  #bytes = 0

  constructor (readonly maxEntries: number, readonly maxBytes = Infinity) {}

  get size (): number {
    return this.#entries.size
  }

  /** What the entries weigh, as their callers stated it. */
  get bytes (): number {
    return this.#bytes
  }

  get (key: string, now: number, version: number): T | undefined {
    const entry = this.#entries.get(key)
    if (entry === undefined) {
      return undefined
    }
    if (!holds(entry.value, now, version)) {
      this.#delete(key, entry)
      return undefined
    }
    return entry.value
  }

  set (key: string, value: T, now: number, bytes = 0): void {
    if (value.expiresAt <= now || bytes > this.maxBytes || !this.#seenBefore(key)) {
      return
    }
    const previous = this.#entries.get(key)
    if (previous !== undefined) {
      this.#delete(key, previous)
    }
    for (const [oldest, entry] of this.#entries) {
      if (this.#entries.size < this.maxEntries && this.#bytes + bytes <= this.maxBytes) {
        break
      }
      this.#delete(oldest, entry)
    }
    this.#entries.set(key, { value, bytes })
    this.#bytes += bytes
  }

  #delete (key: string, entry: Entry<T>): void {
    this.#entries.delete(key)
    this.#bytes -= entry.bytes
  }

  /** Records a sighting of `key`; true if it was seen before. */
  #seenBefore (key: string): boolean {
    let fingerprint = 0
    for (let i = 0; i < 6; i++) {
      fingerprint = (fingerprint << 5) ^ key.charCodeAt(i)
    }
    const slot = ((key.charCodeAt(6) << 10) ^ (key.charCodeAt(7) << 5) ^ key.charCodeAt(8)) & (SEEN_SLOTS - 1)
    const seen = this.#seen[slot] === fingerprint
    this.#seen[slot] = fingerprint
    return seen
  }
}
