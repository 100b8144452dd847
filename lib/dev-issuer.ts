import { generateKeyPair, randomUUID, type KeyObject } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { promisify } from 'node:util'
import { Type, type Static } from 'typebox'
import { signRs256 } from './tokens/sign.js'

/** What `POST /dev/token` may ask for; `expiresIn` is the lifetime in seconds. */
export const MintRequest = Type.Object({
  scope: Type.Optional(Type.String({ maxLength: 2000 })),
  permissions: Type.Optional(Type.Array(Type.String({ maxLength: 200 }), { maxItems: 100 })),
  sub: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  expiresIn: Type.Optional(Type.Integer({ minimum: 1, maximum: 86_400 })),
  /** Binds the token to this key (RFC 7638 thumbprint): the token can then only be used with DPoP proofs made with it. */
  jkt: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_-]{43}$' })),
}, { additionalProperties: false })
export type MintRequest = Static<typeof MintRequest>

export const TokenResponse = Type.Object({
  access_token: Type.String(),
  token_type: Type.Union([Type.Literal('Bearer'), Type.Literal('DPoP')]),
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
/** The client the dev issuer's tokens name in `client_id`. */
export const DEV_CLIENT_ID = 'dev-client'

/**
 * A local OAuth issuer for trying the service without an Auth0 tenant: a fresh RSA key pair, its JWKS
 * served over real HTTP on a loopback port of its own, and tokens signed with it. The service verifies
 * these tokens through the same key source and HTTP fetch as a real issuer's.
 */
export async function startDevIssuer (audience: string): Promise<DevIssuer> {
  const { publicKey, privateKey } = await promisify(generateKeyPair)('rsa', { modulusLength: 2048 })
  const kid = randomUUID()
  const jwks = JSON.stringify({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' }] })

  let discovery = ''
  const documents = new Map([
    ['/.well-known/openid-configuration', () => discovery],
    ['/.well-known/jwks.json', () => jwks],
  ])
  const server = createServer((request, response) => {
    const document = request.method === 'GET' ? documents.get(request.url!) : undefined
    response.writeHead(document ? 200 : 404, { 'content-type': 'application/json' })
    response.end(document ? document() : '{"error":"not_found"}')
  })
  const issuer = await listenOnLoopback(server)
  // OIDC Discovery, as a real issuer publishes it: the service finds the key set through it.
  discovery = JSON.stringify({
    issuer,
    jwks_uri: `${issuer}.well-known/jwks.json`,
    id_token_signing_alg_values_supported: ['RS256'],
    response_types_supported: ['token'],
    subject_types_supported: ['public'],
  })

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
  // Shaped as RFC 9068 asks, so that the tokens pass with either AUTH0_TOKEN_PROFILE.
  const payload = {
    iss: signer.issuer,
    sub: request.sub ?? 'dev-user',
    aud: signer.audience,
    client_id: DEV_CLIENT_ID,
    iat: now,
    exp: now + expiresIn,
    jti: randomUUID(),
    ...(request.scope !== undefined && { scope: request.scope }),
    ...(request.permissions !== undefined && { permissions: request.permissions }),
    ...(request.jkt !== undefined && { cnf: { jkt: request.jkt } }),
  }
  const token = signRs256({ kid: signer.kid, typ: 'at+jwt' }, payload, signer.privateKey)
  return { access_token: token, token_type: request.jkt === undefined ? 'Bearer' : 'DPoP', expires_in: expiresIn }
}

async function listenOnLoopback (server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/`
}
