import { STATUS_CODES } from 'node:http'

export type AuthErrorCode =
  | 'authorization_header_missing'
  | 'invalid_header'
  | 'token_expired'
  | 'invalid_claims'
  | 'invalid_token'
  | 'insufficient_scope'
  | 'invalid_dpop_proof'
  | 'jwks_unavailable'
  | 'overloaded'

/** The RFC 6750 `error` attribute each code puts in its challenge (`missing` adds none, §3.1). */
const CHALLENGE_ERROR: Record<AuthErrorCode, string | undefined> = {
  authorization_header_missing: undefined,
  invalid_header: 'invalid_request',
  token_expired: 'invalid_token',
  invalid_claims: 'invalid_token',
  invalid_token: 'invalid_token',
  insufficient_scope: 'insufficient_scope',
  invalid_dpop_proof: 'invalid_dpop_proof',
  jwks_unavailable: undefined,
  overloaded: undefined,
}

const STATUS: Record<AuthErrorCode, number> = {
  authorization_header_missing: 401,
  invalid_header: 401,
  token_expired: 401,
  invalid_claims: 401,
  invalid_token: 401,
  insufficient_scope: 403,
  invalid_dpop_proof: 401,
  jwks_unavailable: 503,
  overloaded: 503,
}

/**
 * Codes whose answer depends on the token alone; `permanent: false` marks the exceptions (nbf, an unknown
 * key). A proof is checked per request and never remembered.
 */
const PERMANENT = new Set<AuthErrorCode>(['token_expired', 'invalid_claims', 'invalid_token'])

/** The authentication schemes of RFC 6750 and RFC 9449. */
export type Scheme = 'Bearer' | 'DPoP'

/** What a 401/403 challenge tells the client besides the error: where it is, and what it should send. */
export interface ChallengeParams {
  realm: string
  /** The route's scopes: named in every challenge of the route, so a client knows what to ask for. */
  scopes?: readonly string[] | undefined
  /** RFC 9728: the URL of this resource's protected-resource metadata. */
  resourceMetadata?: string | undefined
  /** The schemes this API accepts, in the order it offers them. */
  schemes?: readonly Scheme[]
  /** The proof algorithms a DPoP challenge offers (`algs`). */
  dpopAlgorithms?: readonly string[]
}

const DEFAULT_CHALLENGE: ChallengeParams = { realm: 'api' }

interface AuthErrorDetails {
  /** The scopes a 403 names when no route states them. */
  scopes?: readonly string[] | undefined
  retryAfterSec?: number
  permanent?: boolean
}

/**
 * The one error class of the service. Messages are fixed texts written here, never copied from a token,
 * an upstream response or another library's error, so nothing secret reaches a client. An error is made
 * once and shared; `withChallenge` gives the same answer as a given route states it.
 */
export class AuthError extends Error {
  override name = 'AuthError'
  readonly statusCode: number
  /** Response headers the error carries: the `WWW-Authenticate` challenge, or `Retry-After`. */
  readonly headers: Record<string, string>
  /** The same token will always get this answer (a bad signature, an expiry), so it may be remembered. */
  readonly permanent: boolean

  constructor (readonly code: AuthErrorCode, message: string, readonly details: AuthErrorDetails = {}, challengeParams = DEFAULT_CHALLENGE, scheme: Scheme = 'Bearer') {
    super(message)
    this.statusCode = STATUS[code]
    this.permanent = details.permanent ?? PERMANENT.has(code)
    this.headers = this.statusCode === 503
      ? { 'retry-after': String(details.retryAfterSec ?? 1) }
      : { 'www-authenticate': challenge(code, message, { ...challengeParams, scopes: details.scopes ?? challengeParams.scopes }, scheme) }
  }

  /** This answer as a route or an app states it to a request that used `scheme` (made once: see `Answers`). */
  withChallenge (params: ChallengeParams, scheme: Scheme): AuthError {
    return new AuthError(this.code, this.message, this.details, params, scheme)
  }

  /** Fastify's own error shape, plus our lower snake case `code`. */
  toJSON (): { statusCode: number, error: string, code: AuthErrorCode, message: string } {
    return { statusCode: this.statusCode, error: STATUS_CODES[this.statusCode]!, code: this.code, message: this.message }
  }
}

/**
 * The errors of one route (or app) with its challenge, each made on first use and then reused, so a refused
 * request costs one Map lookup. Errors are shared constants, so the map stays small; a 503 has no challenge
 * and passes through.
 */
export class Answers {
  readonly #byScheme = { Bearer: new Map<AuthError, AuthError>(), DPoP: new Map<AuthError, AuthError>() }

  constructor (readonly params: ChallengeParams) {}

  for (error: AuthError, scheme: Scheme): AuthError {
    if (error.statusCode === 503) {
      return error
    }
    const answers = this.#byScheme[scheme]
    let answer = answers.get(error)
    if (answer === undefined) {
      answer = error.withChallenge(this.params, scheme)
      answers.set(error, answer)
    }
    return answer
  }
}

/**
 * The `WWW-Authenticate` value: with no error, a challenge for every accepted scheme (one header, so that
 * none overwrites another); with one, the challenge of the scheme the request used (or the first accepted,
 * if it used another) carrying the error.
 */
function challenge (code: AuthErrorCode, description: string, params: ChallengeParams, scheme: Scheme): string {
  const accepted = params.schemes ?? ['Bearer']
  const error = CHALLENGE_ERROR[code]
  if (error === undefined) {
    return accepted.map((offered) => schemeChallenge(offered, [], params)).join(', ')
  }
  const used = code === 'invalid_dpop_proof' ? 'DPoP' : scheme
  return schemeChallenge(accepted.includes(used) ? used : accepted[0]!, [`error="${error}"`, `error_description="${description}"`], params)
}

function schemeChallenge (scheme: Scheme, errorAttributes: string[], { realm, scopes, resourceMetadata, dpopAlgorithms }: ChallengeParams): string {
  const attributes = scheme === 'Bearer'
    ? [`realm="${realm}"`, ...errorAttributes]
    : [...errorAttributes, `algs="${dpopAlgorithms?.join(' ')}"`]
  if (scopes !== undefined) {
    attributes.push(`scope="${scopes.join(' ')}"`)
  }
  if (resourceMetadata !== undefined) {
    attributes.push(`resource_metadata="${resourceMetadata}"`)
  }
  return `${scheme} ${attributes.join(', ')}`
}
