import { randomBytes } from 'node:crypto'
import type { IncomingMessage } from 'node:http'

// An incoming id is used as it is only if it is short and of characters safe in logs and headers.
const SAFE_ID = /^[A-Za-z0-9._:@/+=-]{1,128}$/
// Ids made here: a prefix of this process and a counter, unique across replicas without a random draw per request.
const PREFIX = randomBytes(6).toString('base64url')
const ID = Symbol('requestId')
let made = 0

/**
 * The request's id: its `X-Request-Id` when that is safe to use (Fastify's own `requestIdHeader` takes any
 * value unchecked), otherwise one made here. Worked out once per request and kept on it.
 */
export function requestId (request: IncomingMessage & { [ID]?: string }): string {
  let id = request[ID]
  if (id === undefined) {
    const incoming = request.headers['x-request-id']
    id = typeof incoming === 'string' && SAFE_ID.test(incoming) ? incoming : `${PREFIX}-${(++made).toString(36)}`
    request[ID] = id
  }
  return id
}
