import { isLoopback } from '../urls.js'
import { FetchError, getJson, type GetJsonOptions } from './http.js'

/** Metadata that answered but cannot be trusted: the issuer is unusable until it says otherwise. */
export class UnusableIssuer extends FetchError {
  override name = 'UnusableIssuer'
}

/**
 * Where an issuer's metadata is: OIDC Discovery (`<issuer without trailing slash>/.well-known/openid-
 * configuration`), then RFC 8414 §3.1 (`/.well-known/oauth-authorization-server` inserted before the path).
 */
export function metadataUrls (issuer: string): [oidc: string, oauth: string] {
  const { origin, pathname } = new URL(issuer)
  return [
    `${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`,
    `${origin}/.well-known/oauth-authorization-server${pathname.replace(/\/$/, '')}`,
  ]
}

/**
 * The `jwks_uri` of `issuer` from its metadata: the OIDC document, or the RFC 8414 one if the first is not
 * there (a 4xx). A server error, a network failure or the deadline fails the whole discovery: both documents
 * live on the same host.
 */
export async function discoverJwksUri (issuer: string, allowLoopbackHttp: boolean, options: GetJsonOptions): Promise<string> {
  const [oidc, oauth] = metadataUrls(issuer)
  let document: unknown
  try {
    document = await getJson(oidc, options)
  } catch (error) {
    if (!(error instanceof FetchError) || error.status === undefined || error.status < 400 || error.status >= 500) {
      throw error
    }
    document = await getJson(oauth, options)
  }
  return jwksUriOf(document, issuer, allowLoopbackHttp)
}

/** Checks a metadata document as RFC 8414 §3.3 asks: it must name this very issuer, and its keys must come over https. */
export function jwksUriOf (document: unknown, issuer: string, allowLoopbackHttp: boolean): string {
  if (typeof document !== 'object' || document === null || Array.isArray(document)) {
    throw new FetchError('metadata is not a JSON object')
  }
  const { issuer: stated, jwks_uri: jwksUri } = document as { issuer?: unknown, jwks_uri?: unknown }
  if (stated !== issuer) {
    throw new UnusableIssuer('metadata names another issuer')
  }
  let url: URL
  try {
    url = new URL(jwksUri as string)
  } catch {
    throw new UnusableIssuer('metadata has no valid jwks_uri')
  }
  const loopbackHttp = url.protocol === 'http:' && allowLoopbackHttp && isLoopback(url.hostname)
  if ((url.protocol !== 'https:' && !loopbackHttp) || url.username !== '' || url.password !== '') {
    throw new UnusableIssuer('jwks_uri is not an https URL')
  }
  return url.href
}
