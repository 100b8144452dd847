import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { FastifySchema } from 'fastify'
import fp from 'fastify-plugin'
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { describePolicy, errorResponses, securityRequirements, securitySchemes, withoutOpenIdConnect, type DocumentedAuth, type SecuredDocument } from '../lib/openapi.js'

// The docs page's own policy: everything from this origin, nothing from anywhere else (it works offline),
// and no `upgrade-insecure-requests` (swagger-ui's default), which breaks the page on a plain-HTTP host.
const DOCS_CSP = [
  "default-src 'self'", "base-uri 'self'", "connect-src 'self'", "font-src 'self' data:", "form-action 'self'",
  "frame-ancestors 'self'", "img-src 'self' data:", "object-src 'none'", "script-src 'self'", "script-src-attr 'none'",
  "style-src 'self'",
].join('; ')

/**
 * OpenAPI 3.1 at /openapi.json and a swagger-ui page at /docs (DOCS; on outside production). The document
 * is built from the route schemas by @fastify/swagger; what each protected route needs comes from the auth
 * plugin's policies through swagger's `transform`, which only shapes the document: the route's own schema,
 * and so what it serialises, is never touched. Nothing here runs per API request.
 */
export default fp(async function docs (app) {
  const { config } = app
  if (!config.docs) {
    return
  }
  const auth: DocumentedAuth = {
    issuers: app.issuers.identifiers,
    dpopMode: config.dpop.mode,
    dpopAlgorithms: config.dpop.algorithms,
    devIssuer: app.devIssuer !== null,
  }
  const schemes = securitySchemes(auth)
  const shedding = config.overload.maxEventLoopDelayMs > 0 || config.overload.maxEventLoopUtilization > 0

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'API authorization service',
        version: packageVersion(),
        description: 'Every error is JSON: `{statusCode, error, code, message}`; every 401 and 403 carries a `WWW-Authenticate` challenge. '
          + 'To try a protected operation: **Authorize**, paste an access token into `bearer`, then **Try it out**.'
          + (auth.devIssuer ? ' With the dev issuer, `POST /dev/token` below mints one (a body such as `{"scope":"read:messages"}` asks for scopes).' : ''),
      },
      // Where clients reach the API; without PUBLIC_URL the page calls the origin it was loaded from.
      ...(config.publicUrl !== undefined && { servers: [{ url: config.publicUrl }] }),
      components: { securitySchemes: schemes },
    },
    // Route paths are kept whole: PUBLIC_URL's path is a prefix the proxy adds, not part of the routes.
    stripBasePath: false,
    transform: ({ schema, url, route }) => {
      const policy = app.authPolicies.get(`${String(route.method)} ${route.url}`)
      const own: FastifySchema = schema ?? {}
      const summary = describePolicy(policy)
      const documented: FastifySchema = {
        ...own,
        // The route's own summary stays; what it needs of a token is then told in the description.
        ...(own.summary === undefined ? { summary } : { description: [own.description, `${summary}.`].filter(Boolean).join('\n\n') }),
        ...(policy !== undefined && { security: securityRequirements(policy, schemes) }),
        response: {
          ...errorResponses(policy, auth, shedding && route.config?.probe !== true),
          // what the route declares is what it sends; without a declaration swagger would say 200 anyway
          ...(own.response as Record<string, unknown> | undefined ?? { 200: { 'x-response-description': 'Default Response' } }),
        },
      }
      return { schema: documented, url }
    },
  })
  let pageDocument: SecuredDocument | undefined // every route is known by the first request
  await app.register(swaggerUi, {
    routePrefix: '/docs',
    staticCSP: DOCS_CSP,
    theme: { title: 'API authorization service: docs' },
    // No top bar: its box loads documents from any URL, and its logo is an inline style the CSP refuses.
    uiConfig: { layout: 'BaseLayout', displayRequestDuration: true },
    transformSpecificationClone: false,
    transformSpecification: (document) => (pageDocument ??= withoutOpenIdConnect(document as unknown as SecuredDocument)),
  })
  app.get('/openapi.json', { schema: { hide: true } }, () => app.swagger())
}, { name: 'docs', dependencies: ['config', 'auth', 'issuers', 'overload'] })

/** This package's version, from its package.json: beside the sources, or one level up from dist/. */
function packageVersion (): string {
  let directory = import.meta.dirname
  while (!existsSync(join(directory, 'package.json')) && directory !== dirname(directory)) {
    directory = dirname(directory)
  }
  return (JSON.parse(readFileSync(join(directory, 'package.json'), 'utf8')) as { version: string }).version
}
