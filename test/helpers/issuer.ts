import { generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { signRs256 } from '../../lib/jwt.js'

export interface SigningKey {
  kid: string
  privateKey: KeyObject
  publicKey: KeyObject
}

/**
 * How the JWKS endpoint behaves: `slow` answers after `delayMs`, `down` resets every connection, `hang`
 * never answers, `html` is a 502 error page, `error` a 500 with a JSON body, `garbage` a 200 that is not
 * JSON, `empty` an empty key set.
 */
export type IssuerMode = 'up' | 'slow' | 'down' | 'hang' | 'html' | 'error' | 'garbage' | 'empty'

export const AUDIENCE = 'https://api.example.test'

/** A real OAuth issuer on 127.0.0.1 with real RSA keys, whose JWKS endpoint can be made to misbehave. */
export class TestIssuer {
  /** Requests the server received, whatever the path. */
  requests = 0
  mode: IssuerMode = 'up'
  delayMs = 0
  /** More entries for the JWKS, as they are: unusable ones, or keys of other types. */
  extraJwks: unknown[] = []
  /** Served instead of the JWKS when set, with `jwksStatus`. */
  jwksBody: string | undefined
  jwksStatus = 200
  /** Where the JWKS is served. */
  jwksPath = '/.well-known/jwks.json'
  /** When set, the JWKS request is redirected there. */
  redirectTo: string | undefined
  /** The keys published in the JWKS; `sign` uses the first by default. */
  keys: SigningKey[] = [newKey()]
  readonly #server = createServer((request, response) => this.#answer(request, response))

  private constructor (readonly url: string) {}

  static async start (): Promise<TestIssuer> {
    const issuer = new TestIssuer('')
    await new Promise<void>((resolve) => issuer.#server.listen(0, '127.0.0.1', resolve))
    const { port } = issuer.#server.address() as AddressInfo
    return Object.assign(issuer, { url: `http://127.0.0.1:${port}/` })
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
    const payload = { iss: this.url, sub: 'user-1', aud: AUDIENCE, iat: now, exp: now + 600, ...claims }
    return signRs256({ kid: key.kid, ...header }, payload, key.privateKey)
  }

  async close (): Promise<void> {
    this.#server.closeAllConnections()
    await new Promise((resolve) => this.#server.close(resolve))
  }

  #answer (request: IncomingMessage, response: ServerResponse): void {
    this.requests++
    if (this.mode === 'down') {
      request.socket.destroy()
    } else if (this.mode === 'hang') {
      // never answers: the connection stays open until the client gives up or the issuer closes
    } else if (this.mode === 'html') {
      response.writeHead(502, { 'content-type': 'text/html' }).end('<html><body><h1>502 Bad Gateway</h1></body></html>')
    } else if (this.mode === 'error') {
      response.writeHead(500, { 'content-type': 'application/json' }).end('{"error":"internal","detail":"upstream secret detail"}')
    } else if (this.redirectTo !== undefined) {
      response.writeHead(302, { location: this.redirectTo }).end()
    } else if (this.mode === 'garbage') {
      response.writeHead(200, { 'content-type': 'application/json' }).end('<html>maintenance</html>')
    } else if (this.mode === 'slow') {
      const body = this.#jwksBody() // as the key set is when the request arrives, like a real issuer's
      setTimeout(() => response.writeHead(200, { 'content-type': 'application/json' }).end(body), this.delayMs)
    } else if (request.url !== this.jwksPath) {
      response.writeHead(404).end()
    } else {
      this.#serveJwks(response)
    }
  }

  #serveJwks (response: ServerResponse): void {
    response.writeHead(this.jwksStatus, { 'content-type': 'application/json' }).end(this.#jwksBody())
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
