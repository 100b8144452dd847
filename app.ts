import autoload from '@fastify/autoload'
import fp from 'fastify-plugin'
import Fastify, { type FastifyError, type FastifyHttpOptions, type FastifyInstance } from 'fastify'
import { createServer, STATUS_CODES, type Server, type ServerResponse } from 'node:http'
import { join } from 'node:path'
import type { Duplex } from 'node:stream'
import type { Config } from './lib/config.js'
import { AuthError } from './lib/errors.js'
import { deferChildren, loggingOptions } from './lib/logging.js'
import { RequestIdResponse, requestId } from './lib/request-id.js'

export interface AppOptions {
  config: Config
}

/** The application: plugins/ (cross-cutting, ordered by their declared dependencies), then routes/. */
export default async function app (fastify: FastifyInstance, options: AppOptions) {
  fastify.setErrorHandler(function handleError (error: FastifyError, request, reply) {
    if (error instanceof AuthError) {
      return reply.code(error.statusCode).headers(error.headers).send(error.toJSON())
    }
    const statusCode = error.statusCode ?? 500
    if (statusCode < 500) {
      // Fastify's own client errors (validation, body parsing, size): their messages name no secrets.
      return reply.code(statusCode).send({ statusCode, error: STATUS_CODES[statusCode], code: error.code, message: error.message })
    }
    request.log.error({ err: error }, 'request failed')
    return reply.code(500).send({ statusCode: 500, error: STATUS_CODES[500], message: 'Internal Server Error' })
  })

  await fastify.register(autoload, { dir: join(import.meta.dirname, 'plugins'), options })
  await fastify.register(autoload, { dir: join(import.meta.dirname, 'routes'), options })
}

/**
 * The server as production runs it; tests build theirs here too. The app is registered unencapsulated,
 * so routes added beside it get the same error handler and route-config authentication.
 */
export async function buildServer (config: Config): Promise<FastifyInstance> {
  const server = Fastify(serverOptions(config))
  deferChildren(server.log)
  await server.register(fp(app, { name: 'app' }), { config })
  return server
}

function serverOptions (config: Config): FastifyHttpOptions<Server> {
  return {
    ...loggingOptions(config, process.stdout.isTTY),
    // Nothing here takes large bodies; a client that sends one gets a 413.
    bodyLimit: 64 * 1024,
    // While shutting down, a request that still reaches us on an open connection is served (with
    // `Connection: close`) rather than refused: nothing already sent to this replica fails.
    return503OnClosing: false,
    // X-Forwarded-* (scheme and host, as DPoP proofs name them) only from the proxies TRUST_PROXY names.
    trustProxy: config.trustProxy,
    // Node's own answers to broken requests (431, 408, 400), in the service's error shape.
    clientErrorHandler,
    // The log's request id is the one the response carries: an incoming X-Request-Id when safe, else ours.
    genReqId: requestId,
    serverFactory: (handler) => createServer({
      // Every limit finite: a client that trickles its headers or its request is cut off instead of
      // holding a socket (Node checks both every second), and idle keep-alive connections end.
      headersTimeout: config.headersTimeoutMs,
      requestTimeout: config.requestTimeoutMs,
      keepAliveTimeout: config.keepAliveTimeoutMs,
      connectionsCheckingInterval: 1000,
      maxHeaderSize: config.maxHeaderSize,
      // Two Authorization (or DPoP) headers arrive joined by a comma, which no credentials parser accepts:
      // one fixed answer, 401 invalid_header, before any key is fetched (Envoy's CVE-2025-64527 was a crash there).
      joinDuplicateHeaders: true,
      // Every response echoes the request id, at no cost of a Fastify hook. (The cast: Node's types want a
      // class generic in its request type, which no subclass with members of its own can be.)
      ServerResponse: RequestIdResponse as typeof ServerResponse,
    }, handler),
  }
}

const CLIENT_ERRORS: Record<string, number> = { HPE_HEADER_OVERFLOW: 431, ERR_HTTP_REQUEST_TIMEOUT: 408 }

function clientErrorHandler (error: NodeJS.ErrnoException, socket: Duplex): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) {
    return
  }
  if (socket.writable) {
    const statusCode = CLIENT_ERRORS[error.code!] ?? 400
    const body = JSON.stringify({ statusCode, error: STATUS_CODES[statusCode], code: statusCode === 431 ? 'headers_too_large' : statusCode === 408 ? 'request_timeout' : 'bad_request', message: STATUS_CODES[statusCode] })
    socket.write(`HTTP/1.1 ${statusCode} ${STATUS_CODES[statusCode]}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nContent-Type: application/json; charset=utf-8\r\nConnection: close\r\n\r\n${body}`)
  }
  socket.destroy(error)
}
