import { AuthError, type AuthErrorCode } from './errors.js'
import { metadataUrls } from './keys/discovery.js'
import { acceptedSchemes, type DpopMode } from './tokens/credentials.js'
import type { RoutePolicy } from './tokens/scopes.js'

/**
 * What the OpenAPI document says about authentication, built from a route's policy (its `config.auth`, as
 * the auth plugin enforces it) and the configuration, so that the document cannot say anything else.
 */
export interface DocumentedAuth {
  /** The trusted issuers exactly as tokens name them in `iss` (the dev issuer's when it runs). */
  issuers: readonly string[]
  dpopMode: DpopMode
  dpopAlgorithms: readonly string[]
  /** The embedded dev issuer runs: the bearer scheme says where to get a token. */
  devIssuer: boolean
}

export type SecurityScheme =
  | { type: 'http', scheme: 'bearer' | 'DPoP', bearerFormat?: string, description: string }
  | { type: 'openIdConnect', openIdConnectUrl: string, description: string }

/** OpenAPI's Security Requirement Object: scheme name → scopes; `{}` means no credentials needed. */
export type SecurityRequirement = Record<string, string[]>

/** A response in the form @fastify/swagger reads a route's `schema.response` entries: JSON Schema plus its headers. */
export interface ResponseSchema {
  'x-response-description': string
  headers: Record<string, { type: 'string' | 'integer', description: string }>
  type: 'object'
  required: string[]
  properties: Record<string, Record<string, unknown>>
}

export const BEARER_SCHEME = 'bearer'
export const DPOP_SCHEME = 'dpop'

/**
 * The security schemes of the document: `bearer` (an http bearer scheme) unless DPoP is required, `dpop`
 * (OpenAPI has no DPoP type: an http scheme named `DPoP`, RFC 9449 §7.1) unless DPoP is disabled, and one
 * `openIdConnect` scheme per issuer at its OIDC Discovery URL: `oidc`, then `oidc2`, `oidc3`...
 */
export function securitySchemes (auth: DocumentedAuth): Record<string, SecurityScheme> {
  const schemes: Record<string, SecurityScheme> = {}
  const accepted = acceptedSchemes(auth.dpopMode)
  if (accepted.includes('Bearer')) {
    schemes[BEARER_SCHEME] = {
      type: 'http',
      scheme: 'bearer',
      bearerFormat: 'JWT',
      description: [
        'An access token from a trusted issuer, sent as `Authorization: Bearer <token>`.',
        ...(auth.dpopMode === 'allowed' ? ['A DPoP-bound token must be sent with the `dpop` scheme instead.'] : []),
        ...(auth.devIssuer ? ['With the dev issuer, get one from `POST /dev/token` (on this page too) and paste its `access_token` here.'] : []),
      ].join(' '),
    }
  }
  if (accepted.includes('DPoP')) {
    schemes[DPOP_SCHEME] = {
      type: 'http',
      scheme: 'DPoP',
      description: `A DPoP-bound access token (RFC 9449), sent as \`Authorization: DPoP <token>\` with a fresh \`DPoP\` proof header on every request, signed with the key the token is bound to (${auth.dpopAlgorithms.join(', ')}). This page cannot make proofs: see examples/dpop-client.mjs.`,
    }
  }
  auth.issuers.forEach((issuer, index) => {
    schemes[openIdConnectScheme(index)] = {
      type: 'openIdConnect',
      openIdConnectUrl: metadataUrls(issuer)[0],
      description: `Where tokens come from: ${issuer}. They are sent as the http schemes say.`,
    }
  })
  return schemes
}

function openIdConnectScheme (index: number): string {
  return index === 0 ? 'oidc' : `oidc${index + 1}`
}

/**
 * A protected route's security requirements: the alternatives a client may satisfy, one per scheme of
 * `schemes` (each carries a token), each with the route's scopes. All-of scopes are one requirement with
 * every scope; any-of scopes are one requirement per scope. An optional route adds `{}`: no credentials.
 */
export function securityRequirements (policy: RoutePolicy, schemes: Record<string, SecurityScheme>): SecurityRequirement[] {
  const { requirement } = policy
  const scopeSets = requirement === undefined ? [[]] : requirement.match === 'all' ? [[...requirement.scopes]] : requirement.scopes.map((scope) => [scope])
  const requirements = Object.keys(schemes).flatMap((scheme) => scopeSets.map((scopes) => ({ [scheme]: scopes })))
  return policy.optional ? [...requirements, {}] : requirements
}

/** The parts of an OpenAPI document that `withoutOpenIdConnect` reads. */
export interface SecuredDocument {
  components: { securitySchemes: Record<string, { type: string }> }
  paths: Record<string, Record<string, { security?: SecurityRequirement[] }>>
}

/**
 * A copy of the document for the docs page: without its openIdConnect schemes and the requirements that
 * name them, since swagger-ui fetches every `openIdConnectUrl` as it loads a document, which would take the
 * page off this host (its CSP refuses it). The page authorizes with the bearer scheme.
 */
export function withoutOpenIdConnect<T extends SecuredDocument> (document: T): T {
  const copy = JSON.parse(JSON.stringify(document)) as T
  const { securitySchemes } = copy.components
  const removed = new Set(Object.keys(securitySchemes).filter((name) => securitySchemes[name]!.type === 'openIdConnect'))
  for (const name of removed) {
    delete securitySchemes[name]
  }
  for (const operation of Object.values(copy.paths).flatMap((item) => Object.values(item))) {
    if (operation.security !== undefined) {
      operation.security = operation.security.filter((requirement) => !Object.keys(requirement).some((name) => removed.has(name)))
    }
  }
  return copy
}

/** One line of plain text for a person reading the docs page (an operation's summary): what a route asks of a token. */
export function describePolicy (policy: RoutePolicy | undefined): string {
  if (policy === undefined) {
    return 'No access token needed'
  }
  if (policy.optional) {
    return 'Access token optional: anonymous without an Authorization header, else it must be valid'
  }
  const { requirement } = policy
  if (requirement === undefined) {
    return 'Needs a valid access token'
  }
  const { match, scopes } = requirement
  return `Needs an access token granting ${match === 'all' ? scopes.join(' and ') : `one of ${scopes.join(', ')}`}`
}

/** What each code means, for the documented responses. Every code is listed: the compiler sees to it. */
const MEANINGS: Record<AuthErrorCode, string> = {
  authorization_header_missing: 'no Authorization header',
  invalid_header: 'the Authorization header is not an accepted scheme followed by one token',
  token_expired: 'the token has expired',
  invalid_claims: 'a wrong issuer or audience, or a claim missing, mistyped or out of its time window',
  invalid_token: 'a bad signature, algorithm, key or `typ`, or not a token at all',
  invalid_dpop_proof: 'a DPoP proof missing, malformed, wrong or used before',
  insufficient_scope: 'a valid token without the scopes this operation needs',
  jwks_unavailable: 'the issuer\'s signing keys cannot be had now',
  overloaded: 'too much at once',
}

const STATUS_OF = new Map((Object.keys(MEANINGS) as AuthErrorCode[]).map((code) => [code, new AuthError(code, MEANINGS[code]).statusCode]))

/**
 * The contract's error responses a route can give (401, 403, 503), with their `code`s, the error schema
 * (`{statusCode, error, code, message}`, Fastify's shape) and the `WWW-Authenticate` or `Retry-After` header.
 * A protected route: every 401 its policy allows (no `authorization_header_missing` when the token is
 * optional, no proof errors without DPoP), 403 when it names scopes, 503 when keys cannot be had (and for
 * a full DPoP replay store). `shed`: load shedding may refuse the route, which adds `503 overloaded`.
 */
export function errorResponses (policy: RoutePolicy | undefined, auth: DocumentedAuth, shed: boolean): Record<string, ResponseSchema> {
  const codes = new Set<AuthErrorCode>()
  if (policy !== undefined) {
    for (const code of STATUS_OF.keys()) {
      codes.add(code)
    }
    if (policy.optional) codes.delete('authorization_header_missing')
    if (policy.requirement === undefined) codes.delete('insufficient_scope')
    if (auth.dpopMode === 'disabled') {
      codes.delete('invalid_dpop_proof')
      codes.delete('overloaded') // only the replay store refuses a protected route for load here
    }
  }
  if (shed) codes.add('overloaded')
  const responses: Record<string, ResponseSchema> = {}
  for (const status of new Set([...codes].map((code) => STATUS_OF.get(code)!))) {
    responses[status] = errorResponse(status, [...codes].filter((code) => STATUS_OF.get(code) === status))
  }
  return responses
}

function errorResponse (status: number, codes: AuthErrorCode[]): ResponseSchema {
  const example = new AuthError(codes[0]!, MEANINGS[codes[0]!])
  return {
    'x-response-description': `${example.toJSON().error}: ${codes.map((code) => `\`${code}\` (${MEANINGS[code]})`).join(', ')}`,
    headers: status === 503
      ? { 'Retry-After': { type: 'integer', description: 'Seconds to wait before trying again' } }
      : { 'WWW-Authenticate': { type: 'string', description: 'The RFC 6750 (and RFC 9449) challenge: the accepted schemes, the error and the scopes needed' } },
    type: 'object',
    required: ['statusCode', 'error', 'code', 'message'],
    properties: {
      statusCode: { type: 'integer', enum: [status] },
      error: { type: 'string', enum: [example.toJSON().error] },
      code: { type: 'string', enum: codes },
      message: { type: 'string', description: 'A fixed text saying what is wrong' },
    },
  }
}
