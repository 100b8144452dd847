import fastifyJwt, { type TokenOrHeader } from '@fastify/jwt'
import type { FastifyRequest, onRequestHookHandler, preHandlerHookHandler } from 'fastify'
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
    let payload: Record<string, unknown>
    try {
      payload = await request.jwtVerify<Record<string, unknown>>()
    } catch (error) {
      throw toAuthError(error)
    }
    request.user = checkClaims(payload, expected)
  }
  app.decorate('authenticate', authenticate)

  app.addHook('onRoute', (route) => {
    const auth = route.config?.auth
    if (auth === undefined) {
      return
    }
    const requirement = scopeRequirement(auth, `${String(route.method)} ${route.url}`)
    route.onRequest = [authenticate as onRequestHookHandler, ...asArray(route.onRequest)]
    if (requirement !== undefined) {
      route.preHandler = [requireScopes(requirement), ...asArray(route.preHandler)]
    }
  })
}, { name: 'auth', dependencies: ['config', 'key-source'] })

function requireScopes (requirement: ScopeRequirement): preHandlerHookHandler {
  return async function checkScopes (request: FastifyRequest) {
    if (!isSatisfied(requirement, grantedScopes(request.user))) {
      throw new AuthError('insufficient_scope', 'Token does not grant the scope this route requires', { scopes: requirement.scopes })
    }
  }
}

function asArray<T> (value: T | T[] | undefined): T[] {
  return value === undefined ? [] : Array.isArray(value) ? value : [value]
}
