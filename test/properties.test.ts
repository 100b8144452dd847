import fc, { type Arbitrary, type Command, type IProperty } from 'fast-check'
import assert from 'node:assert/strict'
import { createPublicKey, generateKeyPairSync, hash, type JsonWebKey } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { CONFIG_VARIABLES, ConfigError, loadConfig, type Config } from '../lib/config.js'
import { AuthError } from '../lib/errors.js'
import { changesKeys, parseKeySet, type PublicKey } from '../lib/keys/jwks.js'
import { parseCredentials } from '../lib/tokens/credentials.js'
import { OutcomeCache } from '../lib/tokens/outcome-cache.js'
import { grantedScopes, isSatisfied, routePolicy, type RouteAuth } from '../lib/tokens/scopes.js'

// Properties of the parsers, the scope rules and the outcome cache, over generated inputs. Every property runs
// with the same seed, printed first: PROPERTY_SEED=<that seed, or the one fast-check reports> replays a failed run.
const seed = Number(process.env.PROPERTY_SEED || Date.now())
if (!Number.isSafeInteger(seed)) {
  throw new Error(`PROPERTY_SEED must be an integer, not ${process.env.PROPERTY_SEED}`)
}
const numRuns = 150
t.comment(`fast-check seed ${seed}: replay with PROPERTY_SEED=${seed}`)

/** One tap test a property; its time is in the pass message (each should stay well under 2 s). */
function property<Ts> (claim: string, prop: IProperty<Ts>, options: { todo?: string } = {}): void {
  t.test(claim, options, async (t) => {
    const started = performance.now()
    fc.assert(prop, { seed, numRuns })
    t.pass(`${numRuns} runs in ${Math.round(performance.now() - started)} ms`)
  })
}

const charsOf = (chars: string | string[]): Arbitrary<string> => fc.constantFrom(...chars)
const spaces = (minLength: number): Arbitrary<string> => fc.string({ unit: fc.constant(' '), minLength, maxLength: 4 })
const sameSet = (set: ReadonlySet<string>, members: string[]): boolean => set.size === new Set(members).size && members.every((member) => set.has(member))

// ---- the Authorization header: RFC 6750 §2.1, `"Bearer" 1*SP b64token` (DPoP disabled, so the only scheme)

const bearerToken = (value: string | undefined): string => parseCredentials(value, 'disabled').token

const B64TOKEN_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/'
const b64token = fc.tuple(fc.string({ unit: charsOf(B64TOKEN_CHARS), minLength: 1 }), fc.string({ unit: fc.constant('='), maxLength: 3 }))
  .map(([body, padding]) => body + padding)
const isB64token = (value: string): boolean => /^[^=]/.test(value) && [...value.replace(/=+$/, '')].every((c) => B64TOKEN_CHARS.includes(c))
/** One character no b64token has: neither of its alphabet, nor `=`, nor the space. */
const foreign = fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }).filter((c) => !B64TOKEN_CHARS.includes(c) && c !== '=' && c !== ' ')

interface HeaderParts { scheme: string, gap: string, token: string, tail: string }
const header = ({ scheme, gap, token, tail }: HeaderParts): string => scheme + gap + token + tail
const wellFormed = { scheme: fc.mixedCase(fc.constant('Bearer')), gap: spaces(1), token: b64token, tail: spaces(0) }
/** For each part of a header, ways to get it wrong. */
const broken: Record<keyof HeaderParts, Arbitrary<string>> = {
  scheme: fc.oneof(fc.mixedCase(charsOf(['DPoP', 'Basic', 'Bearer:', 'Bearerr'])), fc.string({ unit: 'grapheme', maxLength: 8 }))
    .filter((s) => !s.includes(' ') && s.toLowerCase() !== 'bearer'),
  gap: fc.oneof(fc.constant(''), fc.tuple(spaces(0), charsOf(['\t', '\n', '\r', '\u00a0', '\u3000', ',']), spaces(0)).map((p) => p.join(''))),
  // a foreign character anywhere in the token, or `=` before its end
  token: fc.tuple(fc.string({ unit: charsOf(B64TOKEN_CHARS) }), fc.oneof(foreign, fc.constant('=')), fc.oneof(b64token, fc.constant('')))
    .filter(([, c, after]) => c !== '=' || after !== '').map((p) => p.join('')),
  tail: fc.tuple(spaces(1), fc.oneof(b64token, foreign)).map((p) => p.join('')),
}
const brokenHeader = fc.oneof(...(Object.keys(broken) as (keyof HeaderParts)[])
  .map((part) => fc.record({ ...wellFormed, [part]: broken[part] }) as Arbitrary<HeaderParts>)).map(header)

// Whatever the header, the answer is a b64token found in it, or one of the two 401s: never another error.
property('bearerToken: a b64token from the header, or authorization_header_missing / invalid_header',
  fc.property(fc.option(fc.oneof(fc.string({ unit: 'binary' }), fc.record(wellFormed).map(header), brokenHeader), { nil: undefined }), (value) => {
    try {
      const token = bearerToken(value)
      return value !== undefined && value.includes(token) && isB64token(token)
    } catch (error) {
      return error instanceof AuthError && error.code === (value === undefined ? 'authorization_header_missing' : 'invalid_header')
    }
  }))

// `Bearer` in any case, spaces, a b64token, maybe trailing spaces: exactly that token.
property('bearerToken: a well-formed header gives exactly its token',
  fc.property(fc.record(wellFormed), (parts) => bearerToken(header(parts)) === parts.token))

// Another scheme, a gap that is not only spaces, a character outside b64token, anything after the token: refused.
property('bearerToken: breaking any one part of a well-formed header refuses it',
  fc.property(brokenHeader, (value) => {
    try {
      bearerToken(value)
      return false
    } catch (error) {
      return error instanceof AuthError && error.code === 'invalid_header'
    }
  }))

// ---- parseKeySet and changesKeys: RFC 7517 documents

const rsaJwk = (modulusLength: number): JsonWebKey => generateKeyPairSync('rsa', { modulusLength }).publicKey.export({ format: 'jwk' })
const ecJwk = (): JsonWebKey => generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' })
const pemOf = (jwk: JsonWebKey): string => createPublicKey({ key: jwk, format: 'jwk' }).export({ type: 'spki', format: 'pem' }).toString()
// Real keys, made once, under kids no generated key uses; and a weak RSA key that must never be used.
const realKeys = [rsaJwk(2048), rsaJwk(2048), ecJwk(), ecJwk()].map((jwk, i) => ({ ...jwk, kid: `real-${i}` }))
const weakKey = { ...rsaJwk(1024), kid: 'weak' }
const pemByKid = new Map(realKeys.map((jwk) => [jwk.kid, pemOf(jwk)]))
const realPems = [...pemByKid.values()]

/** A JWK member: likely values, members of the real keys (to make near-keys), or anything at all. */
const member = (...likely: Arbitrary<unknown>[]): Arbitrary<unknown> => fc.oneof(...likely, fc.anything())
const borrowed = (name: 'n' | 'e' | 'x' | 'y'): Arbitrary<unknown> =>
  member(charsOf([...realKeys, weakKey].flatMap((jwk) => jwk[name] ?? [])), fc.base64String())
const use = member(charsOf(['sig', 'enc', 'SIG', '']))
const kty = member(charsOf(['RSA', 'EC', 'oct', 'OKP', 'rsa']))
const alg = member(charsOf(['RS256', 'ES256', 'PS512', 'none']))
const jwkLike = fc.record({
  kid: fc.oneof(fc.string().map((s) => `junk-${s}`), fc.anything().filter((v) => typeof v !== 'string')),
  use,
  kty,
  alg,
  crv: member(charsOf(['P-256', 'P-384', 'secp256k1', 'Ed25519'])),
  n: borrowed('n'),
  e: borrowed('e'),
  x: borrowed('x'),
  y: borrowed('y'),
}, { requiredKeys: [] })
/** Now and then, a change to a member. */
const sometimes = (change: Arbitrary<unknown>): Arbitrary<unknown> => fc.oneof({ weight: 3, arbitrary: fc.constant(undefined) }, change)
/** A real key (or the weak one) with some of its kid, use, type and alg changed. */
const alteredKey = fc.tuple(
  fc.constantFrom(...realKeys, weakKey),
  fc.record({ kid: sometimes(member(fc.string())), use: sometimes(use), kty: sometimes(kty), alg: sometimes(alg) }),
).map(([jwk, changes]) => ({ ...jwk, ...Object.fromEntries(Object.entries(changes).filter(([, value]) => value !== undefined)) }))
const anyJwk = fc.oneof(jwkLike, alteredKey, fc.anything())

/** The input key `parseKeySet` made `key` from: usable members, the same kid, PEM and alg. */
function madeFrom (jwks: unknown[], kid: string, key: PublicKey): boolean {
  return jwks.some((jwk) => {
    const { kid: ownKid, use, kty, alg } = (jwk ?? {}) as JsonWebKey
    if (ownKid !== kid || (use !== undefined && use !== 'sig') || (kty !== 'RSA' && kty !== 'EC')) {
      return false
    }
    try {
      return pemOf(jwk as JsonWebKey) === key.pem && key.alg === (typeof alg === 'string' ? alg : undefined)
    } catch {
      return false
    }
  })
}
const strongEnough = ({ pem }: PublicKey): boolean => {
  const key = createPublicKey(pem)
  return key.asymmetricKeyType === 'ec' || (key.asymmetricKeyType === 'rsa' && key.asymmetricKeyDetails!.modulusLength! >= 2048)
}

// Whatever the document, a FetchError, or keys each with a kid and a PEM, made from a usable (sig, RSA or EC, strong) JWK.
const jwksDocument = fc.oneof(fc.anything(), fc.jsonValue(), fc.record({ keys: fc.anything() }),
  { weight: 3, arbitrary: fc.array(anyJwk, { maxLength: 8 }).map((keys) => ({ keys })) })
property('parseKeySet: usable keys only, or a FetchError',
  fc.property(jwksDocument, (document) => {
    let keys: Map<string, PublicKey>
    try {
      keys = parseKeySet(document)
    } catch (error) {
      return error instanceof Error && error.name === 'FetchError'
    }
    const jwks = (document as { keys: unknown[] }).keys
    return keys.size > 0 && [...keys].every(([kid, key]) => typeof kid === 'string' && key.pem.startsWith('-----BEGIN PUBLIC KEY-----\n') &&
      madeFrom(jwks, kid, key) && strongEnough(key))
  }))

// Real signing keys (`use` absent or `sig`, maybe an alg) among any junk are all found, each with its PEM and alg.
const optionalAlg = fc.option(charsOf(['RS256', 'ES256']), { nil: undefined })
const signingKey = fc.record({ jwk: fc.constantFrom(...realKeys), sig: fc.boolean(), alg: optionalAlg })
  .map(({ jwk, sig, alg }) => ({ ...jwk, ...(sig ? { use: 'sig' } : {}), alg }))
/** Each item with a random rank, so that sorting by rank mixes two lists. */
const ranked = <T>(item: Arbitrary<T>): Arbitrary<[number, T]> => fc.tuple(fc.nat(), item)
property('parseKeySet: real keys mixed into junk are always found',
  fc.property(fc.uniqueArray(ranked(signingKey), { selector: ([, jwk]) => jwk.kid, minLength: 1 }), fc.array(ranked(fc.oneof(jwkLike, fc.anything())), { maxLength: 8 }),
    (real, junk) => {
      const keys = parseKeySet({ keys: [...real, ...junk].sort(([a], [b]) => a - b).map(([, jwk]) => jwk) })
      return real.every(([, jwk]) => {
        const found = keys.get(jwk.kid)
        return found !== undefined && found.pem === pemByKid.get(jwk.kid) && found.alg === jwk.alg
      })
    }))

// A key withdrawn or changed (PEM or alg) changes the keys; an equal copy, or a key only added, does not.
const keySet = fc.dictionary(fc.string(), fc.record({ pem: charsOf(realPems), alg: optionalAlg }), { minKeys: 1, maxKeys: 4 })
  .map((entries) => new Map(Object.entries(entries)))
property('changesKeys: true iff a key is withdrawn or changed',
  fc.property(keySet, charsOf(['copy', 'add', 'remove', 'new pem', 'new alg']), fc.nat(), fc.string(), (current, edit, which, addedKid) => {
    fc.pre(!current.has(addedKid))
    const next = new Map([...current].map(([kid, key]) => [kid, { ...key }]))
    const [kid, key] = [...current][which % current.size]!
    if (edit === 'add') next.set(addedKid, { pem: realPems[0]!, alg: undefined })
    if (edit === 'remove') next.delete(kid)
    if (edit === 'new pem') next.set(kid, { ...key, pem: realPems.find((pem) => pem !== key.pem)! })
    if (edit === 'new alg') next.set(kid, { ...key, alg: key.alg === undefined ? 'PS256' : undefined })
    return !changesKeys(current, current) && changesKeys(current, next) === !['copy', 'add'].includes(edit)
  }))

// ---- loadConfig

const scratch = mkdtempSync(join(tmpdir(), 'properties-'))
t.teardown(() => rmSync(scratch, { recursive: true, force: true }))

const whitespace = fc.string({ unit: charsOf([' ', '\t', '\n', '\u00a0', '\ufeff', '\u2028']), maxLength: 2 })
const padded = (value: Arbitrary<string>): Arbitrary<string> => fc.tuple(whitespace, value, whitespace).map((p) => p.join(''))
const numberLike = fc.oneof(
  fc.string({ unit: charsOf('0123456789'), minLength: 1, maxLength: 22 }),
  fc.integer({ min: -10, max: 100_000_000 }).map(String),
  charsOf(['0x10', '1e3', '1.0', '+5', '-0', '1_000', '\u0663', '\uff15', 'Infinity', 'NaN']),
)
const settingValue = fc.oneof(
  padded(numberLike),
  charsOf(['production', 'Production', 'development', 'RS256', 'ES256, PS384', 'HS256', 'none', '*', 'https://app.example.com',
    'http://127.0.0.1:9000/', 'https://login.example.com/', 'http://user:pw@example.com/?q#f', 'example.eu.auth0.com',
    'tenant.auth0.com:8443,other.auth0.com', 'rfc9068', 'auth0', 'debug', '0.0.0.0', '::1', 'localhost', 'api,other',
    'http://proxy.internal:3128', 'socks5://proxy', '.internal,localhost', 'true', 'loopback, 10.0.0.0/8', '::1/129']),
  fc.webUrl(),
  fc.string(),
  fc.string({ unit: 'binary' }),
)
const variableName = fc.oneof({ weight: 4, arbitrary: charsOf([...CONFIG_VARIABLES]) }, { weight: 1, arbitrary: fc.string() })
const environment = fc.dictionary(variableName, fc.option(settingValue, { nil: undefined }), { maxKeys: 6 })
/** No .env file, one that is missing, a directory (it cannot be read), or a file of settings and junk lines. */
const dotenv = fc.oneof(
  fc.constant(undefined),
  fc.constant({ path: join(scratch, 'missing.env'), text: undefined }),
  fc.constant({ path: scratch, text: undefined }),
  fc.array(fc.oneof(fc.tuple(variableName, settingValue).map(([name, value]) => `${name}=${value}`), fc.string()), { maxLength: 5 })
    .map((lines) => ({ path: join(scratch, '.env'), text: lines.join('\n') })),
)

/** The Config, or the ConfigError, that `loadConfig` gives; any other error is thrown on. */
function configOrError (env: Record<string, string | undefined>, dotenvPath?: string): Config | ConfigError {
  try {
    return loadConfig(env, dotenvPath === undefined ? {} : { dotenvPath })
  } catch (error) {
    if (error instanceof ConfigError && error.name === 'ConfigError') {
      return error
    }
    throw error
  }
}

// Whatever the environment and .env file, a Config, or a ConfigError of one line that starts with what is at fault.
property('loadConfig: a Config, or a one-line ConfigError naming a variable or the .env file',
  fc.property(environment, dotenv, (env, file) => {
    if (file?.text !== undefined) writeFileSync(file.path, file.text)
    const outcome = configOrError(env, file?.path)
    return !(outcome instanceof ConfigError) || (!/[\r\n]/.test(outcome.message) &&
      [...CONFIG_VARIABLES, ...(file === undefined ? [] : [file.path])].some((name) => outcome.message.startsWith(`${name} `)))
  }))

/** Each integer setting: what it sets in the Config, and its range. */
const INTEGER_SETTINGS: Record<string, [read: (config: Config) => number | undefined, min: number, max: number]> = {
  AUTH0_CLOCK_TOLERANCE: [(config) => config.clockToleranceSec, 0, 300],
  AUTH0_MAX_TOKEN_AGE: [(config) => config.maxTokenAgeSec, 1, 31_536_000],
  AUTH0_DPOP_MAX_AGE: [(config) => config.dpop.maxAgeSec, 1, 600],
  AUTH0_DPOP_REPLAY_CAPACITY: [(config) => config.dpop.replayCapacity, 1000, 10_000_000],
  JWKS_TIMEOUT_MS: [(config) => config.jwksTimeoutMs, 50, 60_000],
  JWKS_COOLDOWN_MS: [(config) => config.jwksCooldownMs, 1000, 3_600_000],
  JWKS_MAX_AGE_MS: [(config) => config.jwksMaxAgeMs, 1000, 86_400_000],
  PORT: [(config) => config.port, 0, 65_535],
  SHUTDOWN_TIMEOUT_MS: [(config) => config.shutdownTimeoutMs, 0, 600_000],
}
/** An integer setting's name, and a value: number-like, at and around its bounds, or any string. */
const integerSetting = fc.constantFrom(...Object.entries(INTEGER_SETTINGS)).chain(([name, [, min, max]]) => fc.record({
  name: fc.constant(name),
  value: fc.oneof(padded(numberLike), padded(charsOf([min - 1, min, max, max + 1].map(String))), fc.string()),
}))

// An integer setting takes decimal digits (with spaces around) within its range, or blank for the default; else it is named.
property('loadConfig: integer settings accept exactly decimal digits within range',
  fc.property(integerSetting, ({ name, value }) => {
    const [read, min, max] = INTEGER_SETTINGS[name]!
    const digits = value.trim()
    const outcome = configOrError({ [name]: value })
    if (digits === '') return !(outcome instanceof ConfigError)
    const accepted = [...digits].every((c) => c >= '0' && c <= '9') && Number(digits) >= min && Number(digits) <= max
    return accepted
      ? !(outcome instanceof ConfigError) && read(outcome) === Number(digits)
      : outcome instanceof ConfigError && outcome.message.startsWith(`${name} `)
  }))

// ---- scopes

/** RFC 6749 §3.3 scope-token: printable ASCII but the space; minus `"` and `\`, as a scope is quoted in challenges. */
const isScopeToken = (value: unknown): boolean =>
  typeof value === 'string' && value !== '' && [...value].every((c) => c >= '!' && c <= '~' && c !== '"' && c !== '\\')
const printableAscii = Array.from({ length: 0x7e - 0x20 }, (_, i) => String.fromCharCode(0x21 + i))
const scopeToken = fc.string({ unit: charsOf(printableAscii.filter(isScopeToken)), minLength: 1, maxLength: 12 })
/** Mostly a few names, so that required and granted scopes overlap often. */
const scopeName = fc.oneof({ weight: 3, arbitrary: charsOf(['read:messages', 'write:messages', 'admin', 'a']) }, { weight: 1, arbitrary: scopeToken })

// `all` is met iff every required scope is granted, `anyOf` iff at least one is.
property('isSatisfied: all needs every scope, anyOf one of them',
  fc.property(fc.array(scopeName, { minLength: 1, maxLength: 4 }), fc.array(scopeName, { maxLength: 6 }), (required, granted) => {
    const all = routePolicy({ scopes: required }, '/route').requirement!
    const anyOf = routePolicy({ scopes: { anyOf: required } }, '/route').requirement!
    return isSatisfied(all, new Set(granted)) === required.every((scope) => granted.includes(scope)) &&
      isSatisfied(anyOf, new Set(granted)) === required.some((scope) => granted.includes(scope))
  }))

/** A claim and the scopes it should grant. */
interface Claim { value: unknown, grants: string[] }
const notA = (type: 'string' | 'array'): Arbitrary<Claim> => fc.anything()
  .filter((value) => type === 'array' ? !Array.isArray(value) : typeof value !== 'string').map((value) => ({ value, grants: [] }))
const scopePart = fc.string({ unit: 'binary', minLength: 1 }).filter((part) => !part.includes(' '))
const scopeClaim: Arbitrary<Claim> = fc.oneof(
  fc.tuple(spaces(0), fc.array(scopePart), fc.integer({ min: 1, max: 3 }), spaces(0))
    .map(([lead, parts, gap, tail]) => ({ value: lead + parts.join(' '.repeat(gap)) + tail, grants: parts })),
  notA('string'),
)
const permissionsClaim: Arbitrary<Claim> = fc.oneof(
  fc.array(fc.oneof(fc.string(), fc.anything())).map((value) => ({ value, grants: value.filter((p): p is string => typeof p === 'string') })),
  notA('array'),
)

// The space-separated parts of `scope` and the strings of `permissions`; a claim of the wrong type grants nothing.
property('grantedScopes: the scope parts and the string permissions, nothing from a claim of the wrong type',
  fc.property(scopeClaim, permissionsClaim, (scope, permissions) =>
    sameSet(grantedScopes({ scope: scope.value, permissions: permissions.value }), [...scope.grants, ...permissions.grants])))

const scopeCandidate = fc.oneof({ weight: 8, arbitrary: scopeToken }, fc.string({ unit: 'grapheme-ascii' }), fc.string({ unit: 'binary' }), fc.anything())
/** A route's `config.auth` stating a list of candidate scopes, as `all` or as `anyOf`. */
const statedScopes = (list: Arbitrary<unknown[]>): Arbitrary<{ match: 'all' | 'any', scopes: unknown[], auth: unknown }> => fc.oneof(
  list.map((scopes) => ({ match: 'all' as const, scopes, auth: { scopes } })),
  list.map((scopes) => ({ match: 'any' as const, scopes, auth: { scopes: { anyOf: scopes } } })),
)

// Whatever a route states, routePolicy gives a policy whose scopes are scope tokens, or throws a TypeError.
property('routePolicy: a policy of scope tokens, or a TypeError',
  fc.property(fc.oneof(fc.anything(), fc.constantFrom(true, 'optional'), statedScopes(fc.array(scopeCandidate, { maxLength: 4 })).map(({ auth }) => auth)), (auth) => {
    try {
      const { requirement } = routePolicy(auth as RouteAuth, '/route')
      return requirement === undefined
        ? auth === true || auth === 'optional'
        : requirement.scopes.length > 0 && requirement.scopes.every(isScopeToken)
    } catch (error) {
      return error instanceof TypeError
    }
  }))

/** A list of scopes is accepted, as stated, iff it is not empty and each of its places holds a scope token. */
const acceptsExactlyScopeTokens = ({ match, scopes, auth }: { match: 'all' | 'any', scopes: unknown[], auth: unknown }): boolean => {
  const stated = Array.from(scopes) // a hole reads as undefined
  try {
    const { requirement } = routePolicy(auth as RouteAuth, '/route')
    return stated.length > 0 && stated.every(isScopeToken) && requirement?.match === match &&
      requirement.scopes.length === stated.length && stated.every((scope, i) => requirement.scopes[i] === scope)
  } catch (error) {
    return error instanceof TypeError && !(stated.length > 0 && stated.every(isScopeToken))
  }
}
property('routePolicy: accepts exactly non-empty lists of scope tokens',
  fc.property(statedScopes(fc.array(scopeCandidate, { maxLength: 4 })), acceptsExactlyScopeTokens))
// A sparse list once required no scope at all (every() skips holes): found by this property.
property('routePolicy: a list with holes is not a list of scope tokens',
  fc.property(statedScopes(fc.sparseArray(scopeCandidate, { maxLength: 4 })), acceptsExactlyScopeTokens))

// ---- OutcomeCache against a model

// Keys as the service makes them (SHA-256, base64), and a twin of the first: equal but for its last characters, so
// their fingerprint (taken from the first characters) collides and the twin may be stored on its first offer.
const cacheKeys = ['a', 'b', 'c', 'd', 'e'].map((name) => hash('sha256', name, 'base64'))
cacheKeys.push(cacheKeys[0]!.slice(0, -4) + (cacheKeys[0]!.endsWith('AAA=') ? 'BBB=' : 'AAA='))
const keyName = (key: string): string => key === cacheKeys.at(-1) ? 'twin of k0' : `k${cacheKeys.indexOf(key)}`
const fingerprint = (key: string): string => key.slice(0, 40)

interface Outcome { expiresAt: number, version: number, bytes: number }

interface CacheModel {
  maxEntries: number
  maxBytes: number
  now: number
  /** The key set version: offers are made with it (or, late, with the one before); lookups ask for it. */
  version: number
  /** Fingerprints offered so far: a key whose fingerprint was never offered before cannot be stored. */
  offered: Set<string>
  /** What a key may hold: the outcomes it may have stored since it was last seen, oldest first. */
  held: Map<string, Outcome[]>
  /** The key of the last offer, if that offer could be stored (not expired, within maxBytes). */
  lastOffer: string | undefined
  /** An outcome that two offers in a row certainly stored, with no offer since: a lookup must find it. */
  fresh: { key: string, outcome: Outcome } | undefined
}
type CacheCommand = Command<CacheModel, OutcomeCache<Outcome>>

class Offer implements CacheCommand {
  constructor (readonly key: string, readonly ttl: number, readonly late: boolean, readonly bytes: number) {}
  check (): boolean { return true }
  run (m: CacheModel, cache: OutcomeCache<Outcome>): void {
    const outcome = { expiresAt: m.now + this.ttl, version: m.version - (this.late ? 1 : 0), bytes: this.bytes }
    cache.set(this.key, outcome, m.now, this.bytes)
    const storable = this.ttl > 0 && this.bytes <= m.maxBytes
    const certain = storable && m.lastOffer === this.key
    if (storable && m.offered.has(fingerprint(this.key))) {
      m.held.set(this.key, certain ? [outcome] : [...m.held.get(this.key) ?? [], outcome])
    }
    m.offered.add(fingerprint(this.key))
    m.lastOffer = storable ? this.key : undefined
    m.fresh = certain ? { key: this.key, outcome } : undefined
  }

  toString (): string { return `offer(${keyName(this.key)}, ttl ${this.ttl}${this.late ? ', previous version' : ''}, ${this.bytes} bytes)` }
}

/** Looks `key` up at the model's time and version, and checks the answer against what the key may hold. */
function lookUp (m: CacheModel, cache: OutcomeCache<Outcome>, key: string): Outcome | undefined {
  const served = cache.get(key, m.now, m.version)
  const { outcome: mustServe } = m.fresh?.key === key ? m.fresh : { outcome: undefined }
  if (served === undefined) {
    assert.ok(mustServe === undefined || mustServe.expiresAt <= m.now || mustServe.version !== m.version,
      `${keyName(key)}: stored by two offers in a row, not served`)
    m.held.delete(key)
    if (mustServe !== undefined) m.fresh = undefined
    return undefined
  }
  assert.ok(m.held.get(key)?.includes(served),
    `${keyName(key)}: served ${JSON.stringify(served)}, not one it may hold (it was never stored, or a later outcome was)`)
  assert.ok(served.expiresAt > m.now, `${keyName(key)}: served at ${m.now}, expired at ${served.expiresAt}`)
  assert.equal(served.version, m.version, `${keyName(key)}: served for version ${m.version}, stored for ${served.version}`)
  m.held.set(key, [served])
  return served
}

class Lookup implements CacheCommand {
  constructor (readonly key: string) {}
  check (): boolean { return true }
  run (m: CacheModel, cache: OutcomeCache<Outcome>): void { lookUp(m, cache, this.key) }
  toString (): string { return `get(${keyName(this.key)})` }
}

/** Looks every key up: what is served at once must fit the budget (entries and bytes). */
class Census implements CacheCommand {
  check (): boolean { return true }
  run (m: CacheModel, cache: OutcomeCache<Outcome>): void {
    const served = cacheKeys.map((key) => lookUp(m, cache, key)).filter((outcome) => outcome !== undefined)
    const bytes = served.reduce((sum, { bytes }) => sum + bytes, 0)
    assert.ok(served.length <= m.maxEntries, `${served.length} entries served at once, maxEntries ${m.maxEntries}`)
    assert.ok(bytes <= m.maxBytes, `${bytes} bytes served at once, maxBytes ${m.maxBytes}`)
  }

  toString (): string { return 'census' }
}

class Tick implements CacheCommand {
  constructor (readonly ms: number) {}
  check (): boolean { return true }
  run (m: CacheModel): void { m.now += this.ms }
  toString (): string { return `tick(${this.ms})` }
}

class NewKeySet implements CacheCommand {
  check (): boolean { return true }
  run (m: CacheModel): void { m.version++ }
  toString (): string { return 'new key set' }
}

const cacheKey = fc.constantFrom(...cacheKeys)
/** An offer: a key, a time to live (at most 0: already expired), made with the previous version now and then, and a weight. */
const offer = fc.tuple(cacheKey, fc.integer({ min: -2, max: 40 }), fc.constantFrom(false, false, false, true), fc.integer({ min: 0, max: 40 }))
  .map((args) => new Offer(...args))
const cacheCommand: Arbitrary<CacheCommand> = fc.oneof(
  { weight: 8, arbitrary: offer },
  { weight: 3, arbitrary: cacheKey.map((key) => new Lookup(key)) },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: 5 }).map((ms) => new Tick(ms)) },
  { weight: 1, arbitrary: fc.constant(new NewKeySet()) },
  { weight: 2, arbitrary: fc.constant(new Census()) },
)

// Entries and bytes never over budget; never an expired, other-version or superseded outcome; stored from the second offer on.
property('OutcomeCache: within budget, never serves an expired, stale or superseded outcome, stores on the second offer',
  fc.property(fc.integer({ min: 1, max: 5 }), fc.oneof(fc.integer({ min: 0, max: 120 }), fc.constant(Infinity)), fc.commands([cacheCommand], { size: 'medium' }),
    (maxEntries, maxBytes, commands) => {
      const model: CacheModel = {
        maxEntries, maxBytes, now: 0, version: 1, offered: new Set(), held: new Map(), lastOffer: undefined, fresh: undefined,
      }
      fc.modelRun(() => ({ model, real: new OutcomeCache<Outcome>(maxEntries, maxBytes) }), commands)
    }))
