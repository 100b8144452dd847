import type { IncomingMessage, ServerResponse } from 'node:http'
import { AuthError } from './errors.js'

/**
 * Load shedding at the door. While `shedding` is set (plugins/overload.ts sets it from under-pressure's
 * samples), the server's request listener answers every request but the probes with `503 overloaded` and
 * `Retry-After` before Fastify sees it. So a healthy service pays one property read per request and no
 * Fastify hook, and a shed request costs the least it can, which leaves more of an overloaded CPU to the
 * requests that are served.
 */
export class OverloadGate {
  shedding = false
  /** Called for every request shed (the metrics count them). */
  onShed?: () => void
  readonly #probes = new Set<string>()
  readonly #body: string
  readonly #head: Record<string, string | number>

  constructor (retryAfterSec: number) {
    const refusal = new AuthError('overloaded', 'The service is overloaded: retry shortly', { retryAfterSec })
    this.#body = JSON.stringify(refusal.toJSON())
    this.#head = { ...refusal.headers, 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(this.#body) }
  }

  /** A path never shed: liveness must not fail for load, and readiness follows keys only. */
  addProbe (path: string): void {
    this.#probes.add(path)
  }

  /** Answers the request with 503 if it is to be shed; true when it did. */
  refused (request: IncomingMessage, response: ServerResponse): boolean {
    if (!this.shedding) {
      return false
    }
    const url = request.url!
    const query = url.indexOf('?')
    if (this.#probes.has(query === -1 ? url : url.slice(0, query))) {
      return false
    }
    this.onShed?.()
    response.writeHead(503, this.#head).end(this.#body)
    return true
  }
}
