import { KeySource, type IssuerStatus, type KeySourceOptions } from './key-source.js'

/**
 * The trusted issuers, each with a key source of its own (its own discovery, key set, cooldown and
 * readiness). A token is matched to an issuer by exact equality of its `iss` with a configured identifier:
 * nothing in a token ever chooses where keys are fetched from.
 */
export class Issuers {
  readonly #byIssuer = new Map<string, KeySource>()
  #version = 0

  constructor (issuers: readonly string[], options: Omit<KeySourceOptions, 'issuer' | 'onChange'>) {
    for (const issuer of issuers) {
      this.#byIssuer.set(issuer, new KeySource({ ...options, issuer, onChange: () => { this.#version++ } }))
    }
  }

  /** The key source of the issuer a token names, or undefined for any issuer not configured. */
  get (iss: unknown): KeySource | undefined {
    return typeof iss === 'string' ? this.#byIssuer.get(iss) : undefined
  }

  /** The issuer identifiers, as configured. */
  get identifiers (): string[] {
    return [...this.#byIssuer.keys()]
  }

  /** Changes whenever any issuer withdraws or replaces a key. */
  get version (): number {
    return this.#version
  }

  /** True when every issuer has keys. */
  get ready (): boolean {
    return this.sources.every((source) => source.ready)
  }

  get status (): IssuerStatus[] {
    return this.sources.map((source) => source.status)
  }


  warmUp (): void {
    for (const source of this.sources) {
      source.warmUp()
    }
  }

  async close (): Promise<void> {
    await Promise.all(this.sources.map((source) => source.close()))
  }

  /** Each issuer's key source. */
  get sources (): KeySource[] {
    return [...this.#byIssuer.values()]
  }
}
