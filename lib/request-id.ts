import { randomBytes } from 'node:crypto'
import { ServerResponse, type IncomingMessage, type OutgoingHttpHeader, type OutgoingHttpHeaders } from 'node:http'

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

type Fields = OutgoingHttpHeaders | OutgoingHttpHeader[]

/**
 * The server's responses: each carries its request's `X-Request-Id`, the id its log lines carry, whatever
 * a route sets. The id joins the header object handed to `writeHead` (Fastify's own, made for each reply)
 * rather than being set beforehand with `setHeader`: headers set both ways put Node on its slower merging
 * path, about 1 µs a request. A header object that cannot take it (an array, a frozen object) or none at
 * all (streams, Node's implicit headers) gets it by `setHeader`.
 */
export class RequestIdResponse extends ServerResponse {
  // Node's defaults (on the prototype) as own fields from the start, so that every response has one shape:
  // a 200 gets them from writeHead in one order, a refusal from reply.code() in the other, and the two
  // shapes made Node's response code polymorphic for good once a process had refused a request.
  override statusMessage = ServerResponse.prototype.statusMessage
  override statusCode = ServerResponse.prototype.statusCode

  override writeHead (statusCode: number, reason?: string | Fields, headers?: Fields): this {
    const fields = typeof reason === 'string' ? headers : reason
    const id = requestId(this.req)
    if (fields !== undefined && !Array.isArray(fields) && Object.isExtensible(fields)) {
      fields['x-request-id'] = id
    } else {
      this.setHeader('x-request-id', id)
    }
    return super.writeHead(statusCode, reason as string, headers)
  }
}
