/** Where RFC 9728 protected-resource metadata is, for a resource identified by `publicUrl`. */
export interface MetadataLocation {
  /** The metadata's URL, as challenges name it (`resource_metadata`). */
  url: string
  /** The paths to serve it at: the plain well-known path, and the path-inserted one when the resource has a path. */
  paths: string[]
}

const WELL_KNOWN = '/.well-known/oauth-protected-resource'

/** RFC 9728 §3.1: the well-known suffix goes between the host and the resource's path (a final slash dropped). */
export function metadataLocation (publicUrl: string): MetadataLocation {
  const { origin, pathname } = new URL(publicUrl)
  const path = `${WELL_KNOWN}${pathname.replace(/\/$/, '')}`
  return { url: `${origin}${path}`, paths: [...new Set([WELL_KNOWN, path])] }
}

export interface ResourceDescription {
  resource: string
  authorizationServers: readonly string[]
  scopes: readonly string[]
  resourceName?: string | undefined
  /** DPoP, unless disabled: the proof algorithms accepted, and whether bound tokens are required. */
  dpop?: { algorithms: readonly string[], required: boolean } | undefined
}

/** The RFC 9728 §2 document; members with no value are left out. */
export function metadataDocument ({ resource, authorizationServers, scopes, resourceName, dpop }: ResourceDescription): Record<string, unknown> {
  return {
    resource,
    authorization_servers: authorizationServers,
    ...(scopes.length > 0 && { scopes_supported: [...new Set(scopes)].sort() }),
    bearer_methods_supported: ['header'],
    ...(resourceName !== undefined && { resource_name: resourceName }),
    ...(dpop !== undefined && { dpop_signing_alg_values_supported: dpop.algorithms, dpop_bound_access_tokens_required: dpop.required }),
  }
}
