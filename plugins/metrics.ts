import fp from 'fastify-plugin'
import { createServer } from 'node:http'
import { collectDefaultMetrics, Registry } from 'prom-client'
import { ServiceMetrics } from '../lib/metrics.js'

declare module 'fastify' {
  interface FastifyInstance {
    metrics: ServiceMetrics
  }
}

/**
 * Prometheus metrics (prom-client 15, which runs on Node 20; its successor needs Node 22), served on a
 * listener of their own at METRICS_PORT, never on the API's port. What other plugins count is in
 * `app.metrics`; with METRICS_PORT=off it is still counted (plain numbers cost nothing) but not served.
 * The request-duration histogram needs a hook on every request, so it is on only with
 * METRICS_REQUEST_DURATION=true.
 */
export default fp(async function metrics (app) {
  const { config } = app
  const registry = new Registry()
  const service = new ServiceMetrics(registry)
  app.decorate('metrics', service)

  if (config.metricsRequestDuration) {
    app.addHook('onRequest', (_request, _reply, done) => {
      service.requestsInFlight.inc()
      done()
    })
    app.addHook('onResponse', (request, reply, done) => {
      service.requestsInFlight.dec()
      // A route pattern, never a raw URL: an unknown path is one label value.
      service.requestSeconds.observe({ route: request.routeOptions.url ?? 'unknown', method: request.method, status_code: reply.statusCode }, reply.elapsedTime / 1000)
      done()
    })
  }

  if (config.metricsPort === undefined) {
    return
  }
  collectDefaultMetrics({ register: registry }) // event-loop delay, GC, heap, handles ...
  const listener = createServer((request, response) => {
    if (request.method !== 'GET' || request.url !== '/metrics') {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('Not Found\n')
      return
    }
    registry.metrics().then((text) => {
      response.writeHead(200, { 'content-type': registry.contentType }).end(text)
    }, (error: unknown) => {
      app.log.error({ err: error }, 'metrics could not be collected')
      response.writeHead(500, { 'content-type': 'text/plain' }).end('Internal Server Error\n')
    })
  })
  // Started with the app, so that a port already taken fails startup instead of leaving metrics unserved.
  app.addHook('onReady', async () => {
    await new Promise<void>((resolve, reject) => {
      listener.once('error', reject).listen(config.metricsPort, config.host, () => resolve())
    })
    service.url = `http://${config.host}:${(listener.address() as { port: number }).port}/metrics`
    app.log.info({ url: service.url }, 'metrics listening')
  })
  app.addHook('onClose', async () => {
    listener.closeAllConnections()
    await new Promise((resolve) => listener.close(resolve))
  })
}, { name: 'metrics', dependencies: ['config'] })
