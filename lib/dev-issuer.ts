import { generateKeyPair, randomUUID, type KeyObject } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { promisify } from 'node:util'
import { Type, type Static } from 'typebox'
import { signRs256 } from './jwt.js'

/** What `POST /dev/token` may ask for; `expiresIn` is the lifetime in seconds. */
export const MintRequest = Type.Object({
  scope: Type.Optional(Type.String({ maxLength: 2000 })),
  permissions: Type.Optional(Type.Array(Type.String({ maxLength: 200 }), { maxItems: 100 })),
  sub: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  expiresIn: Type.Optional(Type.Integer({ minimum: 1, maximum: 86_400 })),
}, { additionalProperties: false })
export type MintRequest = Static<typeof MintRequest>

export const TokenResponse = Type.Object({
  access_token: Type.String(),
  token_type: Type.Literal('Bearer'),
  expires_in: Type.Integer(),
})
export type TokenResponse = Static<typeof TokenResponse>

export interface DevIssuer {
  /** `http://127.0.0.1:<port>/`; its JWKS is at `<issuer>.well-known/jwks.json`, like any issuer's. */
  issuer: string
  mint (request: MintRequest): TokenResponse
  close (): Promise<void>
}

const DEFAULT_LIFETIME_SEC = 3600

/**
 * A local OAuth issuer for trying the service without an Auth0 tenant: a fresh RSA key pair, its JWKS
 * served over real HTTP on a loopback port of its own, and tokens signed with it. The service verifies
 * these tokens through the same key source and HTTP fetch as a real issuer's.
 */
export async function startDevIssuer (audience: string): Promise<DevIssuer> {
  const { publicKey, privateKey } = await promisify(generateKeyPair)('rsa', { modulusLength: 2048 })
  const kid = randomUUID()
  const jwks = JSON.stringify({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' }] })

  const server = createServer((request, response) => {
    const found = request.method === 'GET' && request.url === '/.well-known/jwks.json'
    response.writeHead(found ? 200 : 404, { 'content-type': 'application/json' })
    response.end(found ? jwks : '{"error":"not_found"}')
  })
  const issuer = await listenOnLoopback(server)

  return {
    issuer,
    mint: (request) => mint(request, { issuer, audience, kid, privateKey }),
    close: () => new Promise((resolve) => {
      server.close(() => resolve())
      server.closeAllConnections()
    }),
  }
}

function mint (request: MintRequest, signer: { issuer: string, audience: string, kid: string, privateKey: KeyObject }): TokenResponse {
  const now = Math.floor(Date.now() / 1000)
  const expiresIn = request.expiresIn ?? DEFAULT_LIFETIME_SEC
  const payload = {
    iss: signer.issuer,
    sub: request.sub ?? 'dev-user',
    aud: signer.audience,
    iat: now,
    exp: now + expiresIn,
    ...(request.scope !== undefined && { scope: request.scope }),
    ...(request.permissions !== undefined && { permissions: request.permissions }),
  }
  return { access_token: signRs256({ kid: signer.kid }, payload, signer.privateKey), token_type: 'Bearer', expires_in: expiresIn }
}

async function listenOnLoopback (server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/`
}
