import type { FastifyInstance } from 'fastify'
import { Type } from 'typebox'
import { metadataDocument, metadataLocation } from '../lib/protected-resource.js'

const Metadata = Type.Object({
  resource: Type.String(),
  authorization_servers: Type.Array(Type.String()),
  scopes_supported: Type.Optional(Type.Array(Type.String())),
  bearer_methods_supported: Type.Array(Type.String()),
  resource_name: Type.Optional(Type.String()),
  dpop_signing_alg_values_supported: Type.Optional(Type.Array(Type.String())),
  dpop_bound_access_tokens_required: Type.Optional(Type.Boolean()),
})

/**
 * RFC 9728 protected-resource metadata, served when PUBLIC_URL says where clients reach this API: which
 * authorization servers issue its tokens and every scope its routes ask for, so that OAuth clients (MCP
 * clients among them) can find their way from a 401 to a token.
 */
export default async function protectedResource (app: FastifyInstance) {
  const { config } = app
  if (config.publicUrl === undefined) {
    return
  }
  const resource = config.publicUrl
  let document: Record<string, unknown> | undefined // every route is known by the first request
  const schema = { response: { 200: Metadata } }
  for (const path of metadataLocation(resource).paths) {
    app.get(path, { schema }, () => {
      document ??= metadataDocument({
        resource,
        authorizationServers: app.issuers.identifiers,
        scopes: [...app.authPolicies.values()].flatMap((policy) => policy.requirement?.scopes ?? []),
        resourceName: config.resourceName,
        dpop: config.dpop.mode === 'disabled' ? undefined : { algorithms: config.dpop.algorithms, required: config.dpop.mode === 'required' },
      })
      return document
    })
  }
}
