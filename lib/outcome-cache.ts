/**
 * A bounded map from a token's hash to what verifying it gave, until `expiresAt` or until the key set
 * changes (`version`). When full, the oldest entry goes first (insertion order): a hit costs no
 * bookkeeping, and a token still in use is simply verified again when its turn comes.
 */
export class OutcomeCache<T> {
  readonly #entries = new Map<string, { value: T, expiresAt: number, version: number }>()

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
    if (expiresAt <= now) {
      return
    }
    this.#entries.delete(key)
    if (this.#entries.size >= this.maxEntries) {
      this.#entries.delete(this.#entries.keys().next().value!)
    }
    this.#entries.set(key, { value, expiresAt, version })
  }
}
