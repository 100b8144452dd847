import fp from 'fastify-plugin'
import type { Config } from '../lib/config.js'

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
  }
}

/** Makes the loaded configuration (see lib/config.ts) available to every plugin and route. */
export default fp<{ config: Config }>(async function config (app, options) {
  app.decorate('config', options.config)
}, { name: 'config' })
