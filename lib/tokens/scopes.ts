/**
 * What a route asks of a token, as written in its route config: `true` (any valid token), `'optional'` (a
 * valid token if there is an Authorization header, else none), a list of scopes that are all required, or
 * `{ anyOf: [...] }`.
 */
export type RouteAuth = true | 'optional' | { scopes: readonly string[] | { anyOf: readonly string[] } }

export interface ScopeRequirement {
  /** `all`: every scope is needed; `any`: one of them is enough. */
  match: 'all' | 'any'
  scopes: readonly string[]
}

/** A route's `config.auth`, checked once when the route is added. */
export interface RoutePolicy {
  /** No Authorization header is fine: the handler runs with `request.user` null. */
  optional: boolean
  requirement: ScopeRequirement | undefined
}

// RFC 6749 §3.3 scope-token: printable ASCII without space, `"` or `\` (it is quoted in the challenge).
const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/

/** Validates a route's `config.auth` once, when the route is added; a mistake fails at startup. */
export function routePolicy (auth: RouteAuth, route: string): RoutePolicy {
  if (auth === true || auth === 'optional') {
    return { optional: auth === 'optional', requirement: undefined }
  }
  const stated = auth?.scopes
  const list: unknown = Array.isArray(stated) ? stated : (stated as { anyOf?: unknown } | undefined)?.anyOf
  // A dense copy: every() skips the holes of a sparse array, which would then require nothing.
  const scopes: unknown[] = Array.isArray(list) ? Array.from(list) : []
  if (scopes.length === 0 || !scopes.every((scope) => typeof scope === 'string' && SCOPE_TOKEN.test(scope))) {
    throw new TypeError(`${route}: config.auth must be true, 'optional', { scopes: ['scope', ...] } or { scopes: { anyOf: ['scope', ...] } } with scope names free of spaces and quotes`)
  }
  return { optional: false, requirement: { match: Array.isArray(stated) ? 'all' : 'any', scopes: scopes as string[] } }
}

/**
 * The scopes a token grants: the space-separated `scope` string and the `permissions` array (Auth0 RBAC).
 * A claim of the wrong type grants nothing.
 */
export function grantedScopes (claims: { scope?: unknown, permissions?: unknown }): Set<string> {
  const granted = new Set<string>()
  if (typeof claims.scope === 'string') {
    for (const scope of claims.scope.split(' ')) {
      if (scope !== '') granted.add(scope)
    }
  }
  if (Array.isArray(claims.permissions)) {
    for (const permission of claims.permissions) {
      if (typeof permission === 'string') granted.add(permission)
    }
  }
  return granted
}

export function isSatisfied (requirement: ScopeRequirement, granted: ReadonlySet<string>): boolean {
  return requirement.match === 'all'
    ? requirement.scopes.every((scope) => granted.has(scope))
    : requirement.scopes.some((scope) => granted.has(scope))
}
