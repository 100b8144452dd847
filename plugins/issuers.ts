import fp from 'fastify-plugin'
import { KeySource } from '../lib/key-source.js'

declare module 'fastify' {
  interface FastifyInstance {
    keySource: KeySource
  }
}

/** The signing keys of the trusted issuer: the configured one, or the embedded dev issuer. */
export default fp(async function keySource (app) {
  const { config, devIssuer } = app
  const keys = new KeySource({
    issuer: config.issuer ?? devIssuer!.issuer,
    jwksUrl: config.jwksUrl,
    algorithms: config.algorithms,
    fetchTimeoutMs: config.jwksTimeoutMs,
    unknownKidCooldownMs: config.jwksCooldownMs,
    keyMaxAgeMs: config.jwksMaxAgeMs,
    log: app.log.child({ component: 'key-source' }),
  })
  app.decorate('keySource', keys)
  // Fetch in the background so that /ready turns 200 without waiting for a first request.
  app.addHook('onReady', async () => keys.warmUp())
  app.addHook('onClose', async () => keys.close())
}, { name: 'key-source', dependencies: ['config', 'dev-issuer'] })
