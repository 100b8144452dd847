import fastifyJwt, { type TokenOrHeader } from '@fastify/jwt'
import type { FastifyRequest, onRequestHookHandler } from 'fastify'
import fp from 'fastify-plugin'
import { hash } from 'node:crypto'
import { asArray } from '../lib/as-array.js'
import { tokenBinding, type TokenBinding } from '../lib/dpop/binding.js'
import { ProofChecker } from '../lib/dpop/proof.js'
import { ReplayStore } from '../lib/dpop/replay-store.js'
import { Answers, AuthError, type AuthErrorCode, type ChallengeParams } from '../lib/errors.js'
import type { TokenHeader } from '../lib/keys/key-source.js'
import type { DecisionCounts } from '../lib/metrics.js'
import { metadataLocation } from '../lib/protected-resource.js'
import { checkClaims, checkTokenType, trustedUntilMs, UNTRUSTED_ISSUER, type AccessTokenClaims, type ClaimRules } from '../lib/tokens/claims.js'
import { acceptedSchemes, claimedScheme, HEADER_MISSING, parseCredentials, type Credentials } from '../lib/tokens/credentials.js'
import { OutcomeCache, type Remembered } from '../lib/tokens/outcome-cache.js'
import { RecentHeaders } from '../lib/tokens/recent-headers.js'
import { grantedScopes, isSatisfied, routePolicy, type RouteAuth, type RoutePolicy } from '../lib/tokens/scopes.js'
import { toAuthError } from '../lib/tokens/token-errors.js'

/** Trusted until `expiresAt`, and only while the key set is at `version`. */
interface VerifiedToken extends Remembered {
  claims: AccessTokenClaims
  scopes: ReadonlySet<string>
  /** For a DPoP-bound token sent as DPoP: what each request's proof must match. */
  binding: TokenBinding | undefined
  refusal: undefined
}

/** A refusal that can only repeat (a bad signature, an expiry), remembered like a verified token. */
interface RefusedToken extends Remembered {
  refusal: AuthError
}

// An entry weighs 1.3 to 5 times its token once the claims are parsed (the more permissions, the more):
// 8 MiB of token text keeps the cache under about 40 MB whatever the tokens carry.
const VERIFIED_TOKENS_MAX = 10_000
const VERIFIED_TOKENS_MAX_BYTES = 8 * 1024 * 1024
// A rejection keeps a hash and a small record of a shared error: counting entries is enough.
const REJECTED_TOKENS_MAX = 1_000
// Raw headers of tokens in use: each held for one to two seconds, at most 4 MiB of them a second (1 MiB
// of refused ones, apart, so that repeated bad tokens cannot crowd good ones out).
const RECENT_HEADERS_LIFETIME_MS = 1000
const RECENT_HEADERS_MAX_BYTES = 4 * 1024 * 1024
const RECENT_REFUSED_MAX_BYTES = 1024 * 1024
const REALM = 'api'
const TOKEN_TOO_LONG = new AuthError('invalid_token', 'Token is longer than this API accepts')
// A Bearer request that carries a proof is ambiguous: refused rather than guessed at (RFC 9449 §7.2).
const STRAY_PROOF = new AuthError('invalid_header', 'A Bearer token must not come with a DPoP proof: send a DPoP-bound token as Authorization: DPoP')

declare module 'fastify' {
  interface FastifyInstance {
    /** Verifies the request's token (and DPoP proof) and sets `request.user`, or throws the contract's AuthError. */
    authenticate: (request: FastifyRequest) => Promise<void>
    /** Checks the request's DPoP proof made without an access token (a token endpoint's); returns its key's thumbprint. */
    checkDpopProof: (request: FastifyRequest) => string
    /** What each protected route asks of a token, by `METHOD url`: read by the docs and the RFC 9728 metadata. */
    authPolicies: ReadonlyMap<string, RoutePolicy>
  }
  interface FastifyRequest {
    /** The code a protected route refused the request with, for the access log; undefined when allowed. */
    authOutcome: AuthErrorCode | undefined
  }
  interface FastifyContextConfig {
    /**
     * `true`: a valid token; `'optional'`: a valid token when there is an Authorization header;
     * `{ scopes: [...] }`: all of them; `{ scopes: { anyOf: [...] } }`: one of them.
     */
    auth?: RouteAuth
  }
}

declare module '@fastify/jwt' {
  interface FastifyJWT {
    user: AccessTokenClaims
  }
}

/**
 * Access-token authentication (Bearer, and DPoP-bound tokens with their proofs) with @fastify/jwt, keys
 * from the trusted issuers. A route asks for it in its
 * config (`config: { auth: { scopes: ['read:messages'] } }`) and this plugin attaches one onRequest hook
 * to it that authenticates and, when the route names scopes, checks them. `app.authenticate` does the
 * first half for routes that want to decide for themselves.
 */
export default fp(async function auth (app) {
  const { config, issuers } = app
  const { mode: dpopMode } = config.dpop
  const { maxTokenLength } = config
  // The token of the request being verified, for @fastify/jwt (whose own parser reads `Basic x` as a
  // missing header, `Bearer a b` as a 400, and knows no DPoP scheme).
  const tokens = new WeakMap<FastifyRequest, string>()
  await app.register(fastifyJwt, {
    // Verify-only. The token's own `iss` picks among the configured issuers (an exact match, or no key at
    // all), its kid and alg pick the key; its `typ` must be an access token's, before anything is fetched.
    secret: {
      public: async (_request: FastifyRequest, token: TokenOrHeader) => {
        const { header, payload } = token as { header: TokenHeader & { typ?: unknown }, payload: { iss?: unknown } | null }
        checkTokenType(header.typ, config.tokenProfile)
        const source = issuers.get(payload?.iss)
        if (source === undefined) {
          throw UNTRUSTED_ISSUER
        }
        return source.getKey(header)
      },
    },
    decode: { complete: true },
    verify: {
      algorithms: config.algorithms,
      clockTolerance: config.clockToleranceSec * 1000,
      extractToken: (request) => tokens.get(request),
    },
  })

  const rules: ClaimRules = {
    issuers: new Set(issuers.identifiers),
    audiences: config.audiences,
    profile: config.tokenProfile,
    clockToleranceSec: config.clockToleranceSec,
    maxTokenAgeSec: config.maxTokenAgeSec,
    allowedClients: new Set(config.allowedClients),
  }
  // No outcome outlives the key set it was checked against, whatever the token's exp.
  const outcomeMaxAgeMs = config.jwksMaxAgeMs
  // What verifying a token gave, by the hash of its header: a client reusing its token costs a hash and a
  // lookup instead of a signature check. Failures that can only repeat (a bad signature, an expiry) are
  // remembered apart, so a flood of bad tokens cannot push good ones out.
  const verified = new OutcomeCache<VerifiedToken>(VERIFIED_TOKENS_MAX, VERIFIED_TOKENS_MAX_BYTES)
  const rejected = new OutcomeCache<RefusedToken>(REJECTED_TOKENS_MAX)
  const recentVerified = new RecentHeaders<VerifiedToken>(RECENT_HEADERS_LIFETIME_MS, RECENT_HEADERS_MAX_BYTES)
  const recentRejected = new RecentHeaders<RefusedToken>(RECENT_HEADERS_LIFETIME_MS, RECENT_REFUSED_MAX_BYTES)
  app.addHook('onClose', async () => {
    recentVerified.close()
    recentRejected.close()
  })
  const resourceMetadata = config.publicUrl === undefined ? undefined : metadataLocation(config.publicUrl).url
  const challenge: ChallengeParams = {
    realm: REALM,
    resourceMetadata,
    schemes: acceptedSchemes(dpopMode),
    ...(dpopMode !== 'disabled' && { dpopAlgorithms: config.dpop.algorithms }),
  }
  // A proof passes the iat check for maxAge + tolerance after it is made: remembered that long.
  const replays = new ReplayStore(config.dpop.replayCapacity, (config.dpop.maxAgeSec + 2 * config.clockToleranceSec) * 1000)
  const proofs = new ProofChecker({ algorithms: config.dpop.algorithms, maxAgeSec: config.dpop.maxAgeSec, clockToleranceSec: config.clockToleranceSec, replays })
  const { metrics } = app
  const lookups = metrics.tokenLookups
  metrics.watch({ caches: { verified, rejected }, replays })
  // Where proofs say the request went: PUBLIC_URL when set, else the request's own scheme and host
  // (X-Forwarded-* only from the peers TRUST_PROXY names).
  const publicOrigin = config.publicUrl?.replace(/\/$/, '')
  function requestUrl (request: FastifyRequest): string {
    const { url } = request
    const query = url.indexOf('?')
    return `${publicOrigin ?? `${request.protocol}://${request.host}`}${query === -1 ? url : url.slice(0, query)}`
  }

  /**
   * The token's outcome: from memory when it is known (no promise, no await), else its verification.
   * Outcomes are remembered by the SHA-256 of the whole header: a remembered header needs no parsing, and
   * a preimage-resistant hash is what lets the cache hold no token while a hit still proves the same
   * token. A token in use is found by its raw header first, which is held for seconds only.
   */
  function verify (request: FastifyRequest): VerifiedToken | Promise<VerifiedToken> {
    const authorization = request.headers.authorization
    if (authorization === undefined) {
      throw HEADER_MISSING
    }
    if (authorization.length > maxTokenLength) {
      throw TOKEN_TOO_LONG // before anything is hashed, decoded or remembered
    }
    const now = Date.now()
    const version = issuers.version
    let known = recentVerified.get(authorization, now, version) ?? recentRejected.get(authorization, now, version)
    if (known === undefined) {
      const key = hash('sha256', authorization, 'base64')
      known = verified.get(key, now, version) ?? rejected.get(key, now, version)
      if (known === undefined) {
        lookups.miss++
        // A header or scheme that is not accepted is refused before anything is verified or remembered.
        const credentials = parseCredentials(authorization, dpopMode)
        return verifyNew(request, credentials, { key, now, version, bytes: authorization.length })
      }
      if (known.refusal === undefined) {
        recentVerified.set(authorization, known)
      } else {
        recentRejected.set(authorization, known)
      }
    }
    if (known.refusal !== undefined) {
      lookups.miss++
      throw known.refusal
    }
    lookups.hit++
    checkProof(request, known.binding, now)
    return known
  }

  async function verifyNew (request: FastifyRequest, credentials: Credentials, entry: { key: string, now: number, version: number, bytes: number }): Promise<VerifiedToken> {
    const { key, now, version, bytes } = entry
    try {
      if (credentials.scheme === 'Bearer') {
        checkProof(request, undefined, now)
      }
      tokens.set(request, credentials.token)
      const claims = checkClaims(await request.jwtVerify<Record<string, unknown>>(), rules, now / 1000)
      const expiresAt = Math.min(trustedUntilMs(claims, rules), now + outcomeMaxAgeMs)
      const result = { claims, scopes: grantedScopes(claims), binding: tokenBinding(claims, credentials.scheme, credentials.token, dpopMode), refusal: undefined, expiresAt, version }
      verified.set(key, result, now, bytes)
      if (result.binding !== undefined) {
        checkProof(request, result.binding, now)
      }
      return result
    } catch (error) {
      const authError = toAuthError(error)
      if (authError.permanent) {
        rejected.set(key, { refusal: authError, expiresAt: now + outcomeMaxAgeMs, version }, now)
      }
      throw authError
    }
  }

  /** Per request: a DPoP-bound token's proof, or no proof at all beside a bearer token (DPoP disabled: ignored). */
  function checkProof (request: FastifyRequest, binding: TokenBinding | undefined, now: number): void {
    if (binding !== undefined) {
      proofs.check(request.headers.dpop as string | undefined, { method: request.method, url: requestUrl(request), accessTokenHash: binding.ath, jkt: binding.jkt }, now)
    } else if (dpopMode !== 'disabled' && request.headers.dpop !== undefined) {
      throw STRAY_PROOF
    }
  }

  app.decorate('checkDpopProof', (request: FastifyRequest) =>
    proofs.check(request.headers.dpop as string | undefined, { method: request.method, url: requestUrl(request) }, Date.now()))

  const appAnswers = new Answers(challenge)
  async function authenticate (request: FastifyRequest): Promise<void> {
    try {
      request.user = (await verify(request)).claims
    } catch (error) {
      forget(request)
      throw answered(appAnswers, error, request)
    }
  }
  app.decorate('authenticate', authenticate)

  const policies = new Map<string, RoutePolicy>()
  app.decorate('authPolicies', policies)
  // Kept for refused requests only, beside them: a getter and setter on the prototype cost an accepted
  // request nothing, where a plain decorator is stored on every request, and a second one beside
  // @fastify/jwt's `user` made Fastify's per-request decorator loop megamorphic (about 350 instructions).
  const outcomes = new WeakMap<FastifyRequest, AuthErrorCode | undefined>()
  app.decorateRequest('authOutcome', {
    getter (this: FastifyRequest) {
      return outcomes.get(this)
    },
    setter (this: FastifyRequest, code: AuthErrorCode | undefined) {
      outcomes.set(this, code)
    },
  })

  // One onRequest hook, first: a request without the right token costs no body parsing. It is callback
  // style so that a remembered token costs no promise.
  app.addHook('onRoute', (route) => {
    const auth = route.config?.auth
    if (auth === undefined) {
      return
    }
    const name = `${String(route.method)} ${route.url}`
    const policy = routePolicy(auth, name)
    policies.set(name, policy)
    route.onRequest = [guard(policy, metrics.decisions(String(route.method), route.url)), ...asArray(route.onRequest)]
  })

  function guard ({ optional, requirement }: RoutePolicy, decisions: DecisionCounts): onRequestHookHandler {
    // The route's own challenges: with RFC 9728 metadata, a 401 names the scopes the route wants too.
    const answers = new Answers({ ...challenge, scopes: resourceMetadata === undefined ? undefined : requirement?.scopes })
    const denied = requirement && new AuthError('insufficient_scope', 'Token does not grant the scope this route requires', { scopes: requirement.scopes })
    function admit (request: FastifyRequest, { claims, scopes }: VerifiedToken): Error | undefined {
      request.user = claims // kept on a 403: the caller is authenticated, and onResponse hooks may log who it was
      if (requirement === undefined || isSatisfied(requirement, scopes)) {
        decisions.allowed++
        return undefined
      }
      return refusal(request, denied)
    }
    function refusal (request: FastifyRequest, error: unknown): Error {
      const answer = answered(answers, error, request)
      if (answer instanceof AuthError) {
        decisions[answer.code]++
        request.authOutcome = answer.code
      }
      return answer as Error
    }
    function refuse (request: FastifyRequest, error: unknown, done: (error?: Error) => void): void {
      forget(request)
      done(refusal(request, error))
    }
    return function authenticateRequest (request, _reply, done) {
      if (optional && request.headers.authorization === undefined) {
        decisions.anonymous++
        return done() // anonymous, with request.user null; a header present must hold a valid token
      }
      let outcome: VerifiedToken | Promise<VerifiedToken>
      try {
        outcome = verify(request)
      } catch (error) {
        return refuse(request, error, done)
      }
      if (outcome instanceof Promise) {
        outcome.then((verifiedToken) => done(admit(request, verifiedToken)), (error: unknown) => refuse(request, error, done))
      } else {
        done(admit(request, outcome))
      }
    }
  }
}, { name: 'auth', dependencies: ['config', 'issuers', 'metrics'] })

/**
 * A refusal as this route or app states it to the scheme the request claimed; anything that is not an
 * AuthError is a bug and goes on as it is.
 */
function answered (answers: Answers, error: unknown, request: FastifyRequest): unknown {
  return error instanceof AuthError ? answers.for(error, claimedScheme(request.headers.authorization)) : error
}

/** Leaves no rejected claims behind: @fastify/jwt sets request.user before our claim check. */
function forget (request: FastifyRequest): void {
  (request as { user: unknown }).user = null
}
