import fastifyJwt, { type TokenOrHeader } from '@fastify/jwt'
import type { FastifyRequest, onRequestHookHandler } from 'fastify'
import fp from 'fastify-plugin'
import { hash } from 'node:crypto'
import { bearerToken } from '../lib/bearer.js'
import { checkClaims, type AccessTokenClaims, type ExpectedClaims } from '../lib/claims.js'
import { AuthError } from '../lib/errors.js'
import type { TokenHeader } from '../lib/key-source.js'
import { grantedScopes, isSatisfied, scopeRequirement, type RouteAuth, type ScopeRequirement } from '../lib/scopes.js'
import { OutcomeCache } from '../lib/outcome-cache.js'
import { toAuthError } from '../lib/token-errors.js'

interface VerifiedToken {
  claims: AccessTokenClaims
  scopes: ReadonlySet<string>
}

// An entry weighs 1.3 to 5 times its token once the claims are parsed (the more permissions, the more):
// 8 MiB of token text keeps the cache under about 40 MB whatever the tokens carry.
const VERIFIED_TOKENS_MAX = 10_000
const VERIFIED_TOKENS_MAX_BYTES = 8 * 1024 * 1024
// A rejection keeps a hash and a shared error: counting entries is enough.
const REJECTED_TOKENS_MAX = 1_000

declare module 'fastify' {
  interface FastifyInstance {
    /** Verifies the request's bearer token and sets `request.user`, or throws the contract's AuthError. */
    authenticate: (request: FastifyRequest) => Promise<void>
  }
  interface FastifyContextConfig {
    /** `true`: a valid token; `{ scopes: [...] }`: all of them; `{ scopes: { anyOf: [...] } }`: one of them. */
    auth?: RouteAuth
  }
}

declare module '@fastify/jwt' {
  interface FastifyJWT {
    user: AccessTokenClaims
  }
}

/**
 * Bearer-token authentication with @fastify/jwt, keys from the key source. A route asks for it in its
 * config (`config: { auth: { scopes: ['read:messages'] } }`) and this plugin attaches one onRequest hook
 * to it that authenticates and, when the route names scopes, checks them. `app.authenticate` does the
 * first half for routes that want to decide for themselves.
 */
export default fp(async function auth (app) {
  const { config, keySource } = app
  await app.register(fastifyJwt, {
    // Verify-only: the key comes from the configured issuer's JWKS, chosen by the token's kid and alg.
    secret: { public: async (_request: FastifyRequest, token: TokenOrHeader) => keySource.getKey((token as { header: TokenHeader }).header) },
    decode: { complete: true },
    verify: {
      algorithms: config.algorithms,
      clockTolerance: config.clockToleranceSec * 1000,
      // Our parser, not @fastify/jwt's: it reads `Basic x` as a missing header and `Bearer a b` as a 400.
      extractToken: (request) => bearerToken(request.headers.authorization),
    },
  })

  const expected: ExpectedClaims = { issuer: keySource.issuer, audiences: config.audiences }
  // No outcome outlives the key set it was checked against, whatever the token's exp.
  const outcomeMaxAgeMs = config.jwksMaxAgeMs
  // What verifying a token gave, by the SHA-256 of the whole token: a client reusing its token costs a
  // hash and a lookup instead of a signature check. Failures that can only repeat (a bad signature, an
  // expiry) are remembered apart, so a flood of bad tokens cannot push good ones out.
  const verified = new OutcomeCache<VerifiedToken>(VERIFIED_TOKENS_MAX, VERIFIED_TOKENS_MAX_BYTES)
  const rejected = new OutcomeCache<AuthError>(REJECTED_TOKENS_MAX)

  /** The token's outcome: from memory when it is known (no promise, no await), else its verification. */
  function verify (request: FastifyRequest): VerifiedToken | Promise<VerifiedToken> {
    const token = bearerToken(request.headers.authorization)
    const key = hash('sha256', token, 'base64')
    const now = Date.now()
    keySource.renewIfOld()
    const version = keySource.version
    const known = verified.get(key, now, version)
    if (known !== undefined) {
      return known
    }
    const failure = rejected.get(key, now, version)
    if (failure !== undefined) {
      throw failure
    }
    return verifyNew(request, { key, now, version, bytes: token.length })
  }

  async function verifyNew (request: FastifyRequest, entry: { key: string, now: number, version: number, bytes: number }): Promise<VerifiedToken> {
    const { key, now, version, bytes } = entry
    try {
      const claims = checkClaims(await request.jwtVerify<Record<string, unknown>>(), expected)
      const result = { claims, scopes: grantedScopes(claims) }
      verified.set(key, result, Math.min(claims.exp * 1000, now + outcomeMaxAgeMs), version, now, bytes)
      return result
    } catch (error) {
      const authError = toAuthError(error)
      if (authError.permanent) {
        rejected.set(key, authError, now + outcomeMaxAgeMs, version, now)
      }
      throw authError
    }
  }

  async function authenticate (request: FastifyRequest): Promise<void> {
    try {
      request.user = (await verify(request)).claims
    } catch (error) {
      forget(request)
      throw error
    }
  }
  app.decorate('authenticate', authenticate)

  // One onRequest hook, first: a request without the right token costs no body parsing. It is callback
  // style so that a remembered token costs no promise.
  app.addHook('onRoute', (route) => {
    const auth = route.config?.auth
    if (auth === undefined) {
      return
    }
    const requirement = scopeRequirement(auth, `${String(route.method)} ${route.url}`)
    route.onRequest = [guard(requirement), ...asArray(route.onRequest)]
  })

  function guard (requirement: ScopeRequirement | undefined): onRequestHookHandler {
    const denied = requirement && new AuthError('insufficient_scope', 'Token does not grant the scope this route requires', { scopes: requirement.scopes })
    function admit (request: FastifyRequest, { claims, scopes }: VerifiedToken): AuthError | undefined {
      request.user = claims // kept on a 403: the caller is authenticated, and onResponse hooks may log who it was
      return requirement === undefined || isSatisfied(requirement, scopes) ? undefined : denied
    }
    return function authenticateRequest (request, _reply, done) {
      let outcome: VerifiedToken | Promise<VerifiedToken>
      try {
        outcome = verify(request)
      } catch (error) {
        forget(request)
        return done(error as AuthError)
      }
      if (outcome instanceof Promise) {
        outcome.then((verifiedToken) => done(admit(request, verifiedToken)), (error: AuthError) => {
          forget(request)
          done(error)
        })
      } else {
        done(admit(request, outcome))
      }
    }
  }
}, { name: 'auth', dependencies: ['config', 'key-source'] })

/** Leaves no rejected claims behind: @fastify/jwt sets request.user before our claim check. */
function forget (request: FastifyRequest): void {
  (request as { user: unknown }).user = null
}

function asArray<T> (value: T | T[] | undefined): T[] {
  return value === undefined ? [] : Array.isArray(value) ? value : [value]
}
