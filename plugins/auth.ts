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

// An entry weighs about three times its token (claims parsed into objects); 16 MiB of tokens bounds the heap.
const VERIFIED_TOKENS_MAX = 10_000
const VERIFIED_TOKENS_MAX_BYTES = 16 * 1024 * 1024
const REJECTED_TOKENS_MAX = 1_000
const REJECTED_TOKENS_MAX_BYTES = 1024 * 1024

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
 * to it: `authenticate`, followed by the scope check when the route names scopes.
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
  const rejected = new OutcomeCache<AuthError>(REJECTED_TOKENS_MAX, REJECTED_TOKENS_MAX_BYTES)

  async function verify (request: FastifyRequest): Promise<VerifiedToken> {
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
    try {
      const claims = checkClaims(await request.jwtVerify<Record<string, unknown>>(), expected)
      const result = { claims, scopes: grantedScopes(claims) }
      verified.set(key, result, Math.min(claims.exp * 1000, now + outcomeMaxAgeMs), version, now, token.length)
      return result
    } catch (error) {
      const authError = toAuthError(error)
      if (authError.permanent) {
        rejected.set(key, authError, now + outcomeMaxAgeMs, version, now, token.length)
      }
      throw authError
    }
  }

  /** Verifies the token and sets request.user; resolves with the scopes it grants. */
  async function identify (request: FastifyRequest): Promise<ReadonlySet<string>> {
    try {
      const { claims, scopes } = await verify(request)
      request.user = claims
      return scopes
    } catch (error) {
      // Leave no rejected claims behind: @fastify/jwt sets request.user before our claim check.
      (request as { user: unknown }).user = null
      throw error
    }
  }

  async function authenticate (request: FastifyRequest): Promise<void> {
    await identify(request)
  }
  app.decorate('authenticate', authenticate)

  // Both checks run onRequest, first: a request without the right token costs no body parsing.
  app.addHook('onRoute', (route) => {
    const auth = route.config?.auth
    if (auth === undefined) {
      return
    }
    const requirement = scopeRequirement(auth, `${String(route.method)} ${route.url}`)
    const check = requirement === undefined ? authenticate : authorize(requirement)
    route.onRequest = [check as onRequestHookHandler, ...asArray(route.onRequest)]
  })

  function authorize (requirement: ScopeRequirement) {
    const denied = new AuthError('insufficient_scope', 'Token does not grant the scope this route requires', { scopes: requirement.scopes })
    return async function authenticateWithScopes (request: FastifyRequest): Promise<void> {
      if (!isSatisfied(requirement, await identify(request))) {
        throw denied
      }
    }
  }
}, { name: 'auth', dependencies: ['config', 'key-source'] })

function asArray<T> (value: T | T[] | undefined): T[] {
  return value === undefined ? [] : Array.isArray(value) ? value : [value]
}
