import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import { buildServer } from '../../app.js'
import { loadConfig } from '../../lib/config.js'
import { AUDIENCE, TestIssuer } from './issuer.js'

interface Tap {
  teardown: (fn: () => unknown) => void
}

/**
 * The real app, built as production builds it (same loader, same server options), trusting `issuer`.
 * `env` adds or overrides environment variables; logs are silent unless LOG_LEVEL is given. `routes` are
 * registered beside the app's own, as a user's would be.
 */
export async function buildApp (t: Tap, issuer: TestIssuer | undefined, env: Record<string, string> = {}, routes?: FastifyPluginAsync): Promise<FastifyInstance> {
  const config = loadConfig({
    LOG_LEVEL: 'silent',
    // Tests make keys and tokens in the app's own event loop, which a service never does: no shedding
    // unless a test asks for it.
    OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '0',
    // Any free port for metrics: test files run side by side.
    METRICS_PORT: '0',
    ...(issuer && { AUTH0_ISSUER_URL: issuer.issuer, AUTH0_AUDIENCE: AUDIENCE, JWKS_TIMEOUT_MS: '1000' }),
    ...env,
  })
  const app = await buildServer(config)
  t.teardown(() => app.close())
  if (routes) {
    await app.register(routes)
  }
  await app.ready()
  return app
}

/** A test issuer that is closed when the test ends. */
export async function startIssuer (t: Tap): Promise<TestIssuer> {
  const issuer = await TestIssuer.start()
  t.teardown(() => issuer.close())
  return issuer
}

export function bearer (token: string): { authorization: string } {
  return { authorization: `Bearer ${token}` }
}

/** Resolves once every issuer's keys are loaded (the app fetches them in the background after ready). */
export async function keysLoaded (app: FastifyInstance): Promise<void> {
  while (!app.issuers.ready) {
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}
