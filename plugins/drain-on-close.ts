import fp from 'fastify-plugin'

const REAP_INTERVAL_MS = 100

/**
 * Graceful shutdown: close() stops accepting and lets requests under way finish, but a keep-alive
 * connection that finishes its request afterwards would hold the server open until the client lets go.
 * While closing, such connections are closed as soon as they go idle.
 */
export default fp(async function drainOnClose (app) {
  let reaper: NodeJS.Timeout | undefined
  app.addHook('preClose', async () => {
    reaper = setInterval(() => app.server.closeIdleConnections(), REAP_INTERVAL_MS).unref()
  })
  app.addHook('onClose', async () => clearInterval(reaper))
}, { name: 'drain-on-close' })
