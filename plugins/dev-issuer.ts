import fp from 'fastify-plugin'
import type { AddressInfo } from 'node:net'
import { startDevIssuer, type DevIssuer } from '../lib/dev-issuer.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The embedded dev issuer; null whenever an issuer is configured. */
    devIssuer: DevIssuer | null
  }
}

/** With no issuer configured (never in production, see lib/config.ts), runs the embedded dev issuer. */
export default fp(async function devIssuer (app) {
  if (app.config.issuers.length > 0) {
    app.decorate('devIssuer', null)
    return
  }
  const issuer = await startDevIssuer(app.config.audiences[0]!)
  app.decorate('devIssuer', issuer)
  app.addHook('onClose', () => issuer.close())
  app.addHook('onListen', function () {
    // localhost: curl tries both address families, so this works whatever HOST is bound.
    this.log.warn(devBanner(`http://localhost:${(this.server.address() as AddressInfo).port}`, issuer.issuer))
  })
}, { name: 'dev-issuer', dependencies: ['config'] })

function devBanner (base: string, issuer: string): string {
  const token = (body: string): string =>
    `$(curl -s -X POST ${base}/dev/token${body} | node -pe 'JSON.parse(require("fs").readFileSync(0)).access_token')`
  return [
    'DEV ISSUER ON: tokens are signed by a key made at startup. Not for production: set AUTH0_DOMAIN and AUTH0_AUDIENCE.',
    `  issuer ${issuer}`,
    '  try it:',
    `    curl -s ${base}/api/public`,
    `    TOKEN=${token('')}`,
    `    curl -s ${base}/api/private -H "Authorization: Bearer $TOKEN"`,
    `    SCOPED=${token(` -H 'content-type: application/json' -d '{"scope":"read:messages"}'`)}`,
    `    curl -s ${base}/api/private-scoped -H "Authorization: Bearer $SCOPED"`,
  ].join('\n')
}
