import type { Test } from 'tap'
import { AuthError } from '../../lib/errors.js'
import { KeySource, type KeySourceOptions } from '../../lib/keys/key-source.js'
import type { TestIssuer } from './issuer.js'

export const TIMEOUT_MS = 400
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

export function keySource (t: Test, issuer: TestIssuer, options: Partial<KeySourceOptions> = {}): KeySource {
  const source = new KeySource({ issuer: issuer.issuer, algorithms: ['RS256'], fetchTimeoutMs: TIMEOUT_MS, unknownKidCooldownMs: 30_000, allowLoopbackHttp: true, ...options })
  t.teardown(() => source.close())
  return source
}

export const header = (kid: string, alg = 'RS256') => ({ alg, kid })

/** The AuthError a lookup failed with; anything else fails the test. */
export async function failure (promise: Promise<unknown>): Promise<AuthError> {
  const error = await promise.then(() => undefined, (error: unknown) => error)
  if (!(error instanceof AuthError)) {
    throw new Error(`expected an AuthError, got ${String(error)}`)
  }
  return error
}
