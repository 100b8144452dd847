import { hash } from 'node:crypto'

/**
 * The proofs seen lately, so that a proof is accepted once (RFC 9449 §11.1). An entry is the hash of the
 * proof key's thumbprint and the proof's `jti` (so one client cannot spend another's jti), kept for `ttlMs`:
 * as long as a proof can pass the `iat` check. Every entry lives equally long, so insertion order is expiry
 * order and old entries are dropped from the front as new ones come.
 *
 * The store is bounded: when it holds `capacity` live entries it refuses to remember more, and the caller
 * must refuse the proof (fail closed) rather than forget one that could still be replayed.
 */
export class ReplayStore {
  readonly #seen = new Map<string, number>()

  constructor (readonly capacity: number, readonly ttlMs: number) {}

  /** 'fresh' (now remembered), 'replayed' (seen within ttl) or 'full' (nothing can be remembered now). */
  remember (jkt: string, jti: string, nowMs: number): 'fresh' | 'replayed' | 'full' {
    this.#expire(nowMs)
    // 22 base64 characters: 132 bits of SHA-256, plenty against collisions, half the memory of the whole digest
    const key = hash('sha256', `${jkt}.${jti}`, 'base64').slice(0, 22)
    if (this.#seen.has(key)) {
      return 'replayed'
    }
    if (this.#seen.size >= this.capacity) {
      return 'full'
    }
    this.#seen.set(key, nowMs + this.ttlMs)
    return 'fresh'
  }

  get size (): number {
    return this.#seen.size
  }

  #expire (nowMs: number): void {
    for (const [key, expiresAt] of this.#seen) {
      if (expiresAt > nowMs) {
        return
      }
      this.#seen.delete(key)
    }
  }
}
