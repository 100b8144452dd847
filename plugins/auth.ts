import fastifyJwt, { type TokenOrHeader } from '@fastify/jwt'
import type { FastifyRequest, onRequestHookHandler } from 'fastify'
import fp from 'fastify-plugin'
import { bearerToken } from '../lib/bearer.js'
import { checkClaims, type AccessTokenClaims, type ExpectedClaims } from '../lib/claims.js'
import { AuthError } from '../lib/errors.js'
import type { TokenHeader } from '../lib/key-source.js'
import { grantedScopes, isSatisfied, scopeRequirement, type RouteAuth, type ScopeRequirement } from '../lib/scopes.js'
import { toAuthError } from '../lib/token-errors.js'

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
 * config (`config: { auth: { scopes: ['read:messages'] } }`) and this plugin attaches `authenticate`
 * (onRequest) and the scope check (preHandler) to it.
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

  async function authenticate (request: FastifyRequest): Promise<void> {
    try {
      request.user = checkClaims(await request.jwtVerify<Record<string, unknown>>(), expected)
    } catch (error) {
      // @fastify/jwt set request.user before our claim check: never leave rejected claims behind.
      (request as { user: unknown }).user = null
      throw toAuthError(error)
    }
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
    return async function authenticateWithScopes (request: FastifyRequest): Promise<void> {
      await authenticate(request)
      if (!isSatisfied(requirement, grantedScopes(request.user))) {
        throw new AuthError('insufficient_scope', 'Token does not grant the scope this route requires', { scopes: requirement.scopes })
      }
    }
  }
}, { name: 'auth', dependencies: ['config', 'key-source'] })

function asArray<T> (value: T | T[] | undefined): T[] {
  return value === undefined ? [] : Array.isArray(value) ? value : [value]
}
