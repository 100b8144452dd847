import fp from 'fastify-plugin'
import { outboundDispatcher } from '../lib/keys/http.js'
import { Issuers } from '../lib/keys/issuers.js'

declare module 'fastify' {
  interface FastifyInstance {
    issuers: Issuers
  }
}

/** The trusted issuers and their signing keys: the configured ones, or the embedded dev issuer. */
export default fp(async function issuers (app) {
  const { config, devIssuer } = app
  // The dev issuer is on loopback in this process: never through a proxy.
  const dispatcher = outboundDispatcher(devIssuer === null ? config.proxy : { httpProxy: undefined, httpsProxy: undefined, noProxy: undefined })
  const trusted = new Issuers(devIssuer === null ? config.issuers : [devIssuer.issuer], {
    jwksUrl: config.jwksUrl,
    algorithms: config.algorithms,
    fetchTimeoutMs: config.jwksTimeoutMs,
    unknownKidCooldownMs: config.jwksCooldownMs,
    keyMaxAgeMs: config.jwksMaxAgeMs,
    allowLoopbackHttp: !config.production,
    dispatcher,
    log: app.log.child({ component: 'issuers' }),
    onFetch: (fetch) => app.metrics.keySetFetched(fetch),
  })
  app.metrics.watch({ issuers: trusted })
  app.decorate('issuers', trusted)
  // Fetch in the background so that /ready turns 200 without waiting for a first request.
  app.addHook('onReady', async () => trusted.warmUp())
  app.addHook('onClose', async () => {
    await trusted.close()
    await dispatcher.close()
  })
}, { name: 'issuers', dependencies: ['config', 'dev-issuer', 'metrics'] })
