import { generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { signRs256 } from '../../lib/tokens/sign.js'

export interface SigningKey {
  kid: string
  privateKey: KeyObject
  publicKey: KeyObject
}

/**
 * How an endpoint behaves: `slow` answers after `delayMs`, `down` resets every connection, `hang` never
 * answers, `html` is a 502 error page, `error` a 500 with a JSON body, `garbage` a 200 that is not JSON,
 * `empty` an empty key set, `redirect` a 302 to `redirectTo`.
 */
export type IssuerMode = 'up' | 'slow' | 'down' | 'hang' | 'html' | 'error' | 'garbage' | 'empty' | 'redirect'

/**
 * Which metadata the issuer publishes: `oidc` at `<issuer>/.well-known/openid-configuration`, `oauth` only
 * the RFC 8414 form (`/.well-known/oauth-authorization-server<path>`), `none` neither.
 */
export type DiscoveryStyle = 'oidc' | 'oauth' | 'none'

export const AUDIENCE = 'https://api.example.test'

/**
 * A real OAuth issuer on 127.0.0.1 with real RSA keys, publishing discovery metadata and a JWKS, each of
 * which can be made to misbehave. Its identifier is its root URL unless `path` says otherwise.
 */
export class TestIssuer {
  /** Requests of the key set. */
  requests = 0
  /** Requests of either metadata document. */
  discoveryRequests = 0
  /** How the key set endpoint behaves, and the metadata endpoints. */
  mode: IssuerMode = 'up'
  discoveryMode: IssuerMode = 'up'
  discovery: DiscoveryStyle = 'oidc'
  delayMs = 0
  /** More entries for the JWKS, as they are: unusable ones, or keys of other types. */
  extraJwks: unknown[] = []
  /** Served instead of the JWKS when set, with `jwksStatus`. */
  jwksBody: string | undefined
  jwksStatus = 200
  /** Where the JWKS is served, and named in the metadata. */
  jwksPath = '/.well-known/jwks.json'
  /** Overrides what the metadata says. */
  metadata: Record<string, unknown> = {}
  /** Where `redirect` sends the client. */
  redirectTo: string | undefined
  /** The keys published in the JWKS; `sign` uses the first by default. */
  keys: SigningKey[] = [newKey()]
  /** The issuer's path below its root URL, e.g. `realms/main` (no leading slash). */
  path = ''
  readonly #server = createServer((request, response) => this.#answer(request, response))

  private constructor (readonly url: string) {}

  static async start (): Promise<TestIssuer> {
    const issuer = new TestIssuer('')
    await new Promise<void>((resolve) => issuer.#server.listen(0, '127.0.0.1', resolve))
    const { port } = issuer.#server.address() as AddressInfo
    return Object.assign(issuer, { url: `http://127.0.0.1:${port}/` })
  }

  /** The issuer identifier: what its tokens say in `iss`, and what the service is configured with. */
  get issuer (): string {
    return `${this.url}${this.path}`
  }

  /** Publishes a new key alongside (or, with `replace`, instead of) the current ones. */
  rotate ({ replace = false } = {}): SigningKey {
    const key = newKey()
    this.keys = replace ? [key] : [key, ...this.keys]
    return key
  }

  /** A valid access token with these claims; override `iss`, `aud`, `exp` ... or delete them with `undefined`. */
  token (claims: Record<string, unknown> = {}, key: SigningKey = this.keys[0]!, header: Record<string, unknown> = {}): string {
    const now = Math.floor(Date.now() / 1000)
    const payload = { iss: this.issuer, sub: 'user-1', aud: AUDIENCE, iat: now, exp: now + 600, ...claims }
    return signRs256({ kid: key.kid, ...header }, payload, key.privateKey)
  }

  async close (): Promise<void> {
    this.#server.closeAllConnections()
    await new Promise((resolve) => this.#server.close(resolve))
  }

  #answer (request: IncomingMessage, response: ServerResponse): void {
    if (request.url === this.jwksPath) {
      this.requests++
      this.#behave(this.mode, response, () => this.#jwksBody(), this.jwksStatus)
    } else if (request.url === this.#metadataPath()) {
      this.discoveryRequests++
      this.#behave(this.discoveryMode, response, () => JSON.stringify({ issuer: this.issuer, jwks_uri: `${this.url.slice(0, -1)}${this.jwksPath}`, ...this.metadata }), 200)
    } else {
      response.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not_found"}')
    }
  }

  #metadataPath (): string | undefined {
    const path = this.path === '' ? '' : `/${this.path.replace(/\/$/, '')}`
    return this.discovery === 'oidc'
      ? `${path}/.well-known/openid-configuration`
      : this.discovery === 'oauth' ? `/.well-known/oauth-authorization-server${path}` : undefined
  }

  #behave (mode: IssuerMode, response: ServerResponse, body: () => string, status: number): void {
    const json = { 'content-type': 'application/json' }
    if (mode === 'down') {
      response.socket?.destroy()
    } else if (mode === 'hang') {
      // never answers: the connection stays open until the client gives up or the issuer closes
    } else if (mode === 'html') {
      response.writeHead(502, { 'content-type': 'text/html' }).end('<html><body><h1>502 Bad Gateway</h1></body></html>')
    } else if (mode === 'error') {
      response.writeHead(500, json).end('{"error":"internal","detail":"upstream secret detail"}')
    } else if (mode === 'redirect') {
      response.writeHead(302, { location: this.redirectTo }).end()
    } else if (mode === 'garbage') {
      response.writeHead(200, json).end('<html>maintenance</html>')
    } else if (mode === 'slow') {
      const text = body() // as the document is when the request arrives, like a real issuer's
      setTimeout(() => response.writeHead(status, json).end(text), this.delayMs)
    } else {
      response.writeHead(status, json).end(body())
    }
  }

  #jwksBody (): string {
    const keys = this.mode === 'empty'
      ? []
      : [...this.keys.map(({ kid, publicKey }) => ({ ...publicKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' })), ...this.extraJwks]
    return this.jwksBody ?? JSON.stringify({ keys })
  }
}

// RSA key generation is slow; tests share a pool, so keys repeat only after KEY_POOL_SIZE new ones.
const KEY_POOL_SIZE = 16
const keyPool: { privateKey: KeyObject, publicKey: KeyObject }[] = []
let keysMade = 0

/** A key pair no other key of this test shares, under a fresh kid. */
function newKey (): SigningKey {
  const slot = keysMade++ % KEY_POOL_SIZE
  keyPool[slot] ??= generateKeyPairSync('rsa', { modulusLength: 2048 })
  return { kid: randomUUID(), ...keyPool[slot] }
}
