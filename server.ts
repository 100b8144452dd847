import closeWithGrace from 'close-with-grace'
import { buildServer } from './app.js'
import { ConfigError, loadConfig, type Config } from './lib/config.js'

let config: Config
try {
  config = loadConfig(process.env, { dotenvPath: '.env' })
} catch (error) {
  // loadConfig throws only ConfigErrors: one line naming the variable, no stack trace.
  process.stderr.write(`Invalid configuration: ${(error as ConfigError).message}\n`)
  process.exit(1)
}

const server = await buildServer(config)

// SIGTERM/SIGINT: stop accepting, let requests under way finish, exit 0; past the delay, exit 1.
// An uncaught error takes the same path, with `err` set, and exits 1.
closeWithGrace({ delay: config.shutdownTimeoutMs, logger: server.log }, async ({ signal, err }) => {
  server.log.warn({ signal, err }, 'shutting down')
  await server.close()
})

await server.listen({ port: config.port, host: config.host })
