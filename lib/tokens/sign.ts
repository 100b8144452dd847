import { sign, type KeyObject } from 'node:crypto'

/** A JOSE header or payload, as a base64url JSON segment. */
export function encodeSegment (value: object): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url')
}

/** Signs a JWT with RS256 (RSASSA-PKCS1-v1_5, SHA-256), the algorithm Auth0 uses; `typ` is JWT unless the header says. */
export function signRs256 (header: { kid: string, [field: string]: unknown }, payload: object, privateKey: KeyObject): string {
  const input = `${encodeSegment({ typ: 'JWT', ...header, alg: 'RS256' })}.${encodeSegment(payload)}`
  return `${input}.${sign('sha256', Buffer.from(input), privateKey).toString('base64url')}`
}
