const SEEN_SLOTS = 1 << 16

/**
 * A bounded map from a token's hash to what verifying it gave, until `expiresAt` or until the key set
 * changes (`version`). Keys must be hashes (uniformly random strings): their first characters serve as a
 * fingerprint.
 *
 * An outcome is stored the second time it is offered: a client that reuses its token gets it remembered
 * from its third request on, while a token seen once (most of a flood of new tokens) leaves nothing behind
 * that would outlive the request and churn the garbage collector. A fixed table of fingerprints records
 * the first sightings; a collision only stores an outcome early. When full, the oldest entry goes first
 * (insertion order): a hit costs no bookkeeping.
 */
export class OutcomeCache<T> {
  readonly #entries = new Map<string, { value: T, expiresAt: number, version: number }>()
  readonly #seen = new Int32Array(SEEN_SLOTS)

  constructor (readonly maxEntries: number) {}

  get (key: string, now: number, version: number): T | undefined {
    const entry = this.#entries.get(key)
    if (entry === undefined) {
      return undefined
    }
    if (now >= entry.expiresAt || entry.version !== version) {
      this.#entries.delete(key)
      return undefined
    }
    return entry.value
  }

  set (key: string, value: T, expiresAt: number, version: number, now: number): void {
    if (expiresAt <= now || !this.#seenBefore(key)) {
      return
    }
    this.#entries.delete(key)
    if (this.#entries.size >= this.maxEntries) {
      this.#entries.delete(this.#entries.keys().next().value!)
    }
    this.#entries.set(key, { value, expiresAt, version })
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
