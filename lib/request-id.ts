import { randomBytes } from 'node:crypto'
import { ServerResponse, type IncomingMessage } from 'node:http'

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

/** A response's head as Node's `writeHead` hands it on: a header object, an array of them, or none. */
type Head = Record<string, unknown> | unknown[] | null | undefined

/** Node's own step that builds a response's head: undocumented, and unchanged since its first releases. */
const storeHead = (ServerResponse.prototype as unknown as { _storeHeader (this: ServerResponse, statusLine: string, headers: Head): void })._storeHeader

/**
 * The server's responses: each carries its request's `X-Request-Id`, the id its log lines carry, whatever
 * a route sets. However a response starts (Fastify's `writeHead`, a stream's implicit headers,
 * `flushHeaders`), Node's `writeHead` hands its status line and headers to `_storeHeader`, which builds the
 * head; the id's line joins the status line there. Handed to Node as a header instead, the id cost about
 * 2,000 instructions a request (its name and value each checked by a regular expression, its name
 * lower-cased, its line assembled), 3% of a public request; an id is safe by construction (`SAFE_ID`, or
 * made here), so there is nothing to check.
 */
export class RequestIdResponse extends ServerResponse {
  // Node's defaults (on the prototype) as own fields from the start, so that every response has one shape:
  // a 200 gets them from writeHead in one order, a refusal from reply.code() in the other, and the two
  // shapes made Node's response code polymorphic for good once a process had refused a request.
  override statusMessage = ServerResponse.prototype.statusMessage
  override statusCode = ServerResponse.prototype.statusCode

  protected _storeHeader (statusLine: string, headers: Head): void {
    storeHead.call(this, `${statusLine}x-request-id: ${requestId(this.req)}\r\n`, withoutOwnId(this, headers))
  }
}

/** The head without an X-Request-Id a route set itself (rare: Fastify's head for a reply has none). */
function withoutOwnId (response: ServerResponse, headers: Head): Head {
  if (Array.isArray(headers)) {
    // Node takes [name, value] pairs, or names and values in turn.
    const pairs = Array.isArray(headers[0]) ? headers as unknown[][] : Array.from({ length: headers.length / 2 }, (_, i) => headers.slice(2 * i, 2 * i + 2))
    return pairs.filter(([name]) => String(name).toLowerCase() !== 'x-request-id')
  }
  if (headers?.['x-request-id'] === undefined) {
    return headers
  }
  if (response.hasHeader('x-request-id')) {
    response.removeHeader('x-request-id') // set with setHeader: Node's own store is the head
    return headers
  }
  const { 'x-request-id': _routeOwn, ...rest } = headers
  return rest
}
