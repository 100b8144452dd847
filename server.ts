import closeWithGrace from 'close-with-grace'
import { buildServer } from './app.js'
import { ConfigError, loadConfig, type Config } from './lib/config.js'

let config: Config
try {
  config = loadConfig(process.env, { dotenvPath: '.env' })
} catch (error) {
  if (!(error instanceof ConfigError)) throw error
  process.stderr.write(`Invalid configuration: ${error.message}\n`)
  process.exit(1)
}

const server = await buildServer(config)

// SIGTERM/SIGINT: stop accepting, let requests under way finish, exit 0; past the delay, exit 1.
closeWithGrace({ delay: config.shutdownTimeoutMs, logger: server.log }, async ({ signal, err }) => {
  if (err) {
    server.log.error({ err }, 'shutting down after an unexpected error')
  } else {
    server.log.info({ signal }, 'shutting down')
  }
  await server.close()
})

await server.listen({ port: config.port, host: config.host })
