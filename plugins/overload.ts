import underPressure from '@fastify/under-pressure'
import fp from 'fastify-plugin'
import type { AppOptions } from '../app.js'

const SAMPLE_INTERVAL_MS = 100

declare module 'fastify' {
  interface FastifyContextConfig {
    /** A probe (/health, /ready) is never shed: liveness must not fail for load, readiness follows keys only. */
    probe?: boolean
  }
}

/**
 * Load shedding: past the configured event-loop delay or utilisation, a request gets `503 overloaded` with
 * Retry-After at once, in the contract's shape, instead of queueing until its client times out.
 * @fastify/under-pressure measures (every 100 ms; utilisation over that interval, not since startup); it
 * is given no thresholds, so it adds no hook to any route, and the server's request listener refuses
 * through the gate (lib/overload-gate.ts) while this plugin's sampler says so.
 */
export default fp(async function overload (app, { gate }: AppOptions) {
  const { maxEventLoopDelayMs, maxEventLoopUtilization } = app.config.overload
  gate.onShed = () => app.metrics.shed()
  app.addHook('onRoute', (route) => {
    if (route.config?.probe === true) {
      gate.addProbe(route.url)
    }
  })
  await app.register(underPressure, { sampleInterval: SAMPLE_INTERVAL_MS, eventLoopUtilizationMode: 'interval' })
  if (maxEventLoopDelayMs === 0 && maxEventLoopUtilization === 0) {
    return
  }
  const sample = (): void => {
    const { eventLoopDelay, eventLoopUtilized } = app.memoryUsage()
    gate.shedding = (maxEventLoopDelayMs > 0 && eventLoopDelay > maxEventLoopDelayMs) ||
      (maxEventLoopUtilization > 0 && eventLoopUtilized > maxEventLoopUtilization)
  }
  let starting: NodeJS.Timeout | undefined
  let sampler: NodeJS.Timeout | undefined
  // The first samples measure startup (loading, compiling): nothing is shed until they have passed.
  app.addHook('onReady', async () => {
    starting = setTimeout(() => { sampler = setInterval(sample, SAMPLE_INTERVAL_MS).unref() }, 3 * SAMPLE_INTERVAL_MS).unref()
  })
  app.addHook('onClose', async () => {
    clearTimeout(starting)
    clearInterval(sampler)
    gate.shedding = false
  })
}, { name: 'overload', dependencies: ['config', 'metrics'] })
