import cors from '@fastify/cors'
import fp from 'fastify-plugin'

/** CORS for the origins in CORS_ORIGINS; none configured means no CORS headers at all. */
export default fp(async function corsOrigins (app) {
  const origins = app.config.corsOrigins
  if (origins.length === 0) {
    return
  }
  await app.register(cors, {
    origin: origins.includes('*') ? '*' : origins,
    methods: ['GET', 'HEAD', 'POST'],
    allowedHeaders: ['Authorization', 'Content-Type'],
    // Browsers hide other response headers from scripts; clients need these to react to a 401 or 503.
    exposedHeaders: ['WWW-Authenticate', 'Retry-After'],
    maxAge: 600,
  })
}, { name: 'cors', dependencies: ['config'] })
