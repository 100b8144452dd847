import { monitorEventLoopDelay, performance, type EventLoopUtilization, type IntervalHistogram } from 'node:perf_hooks'

/** The resolution of the delay monitor's timer, which every sample of it includes. */
const RESOLUTION_MS = 10

/**
 * How loaded the event loop was between two calls of `sample()`: the mean delay of its timer (less the
 * timer's own resolution) and the share of the time it was busy. The same measures @fastify/under-pressure
 * takes, without its `onRequest` hook or its memory readings.
 */
export class EventLoopLoad {
  /** Mean event-loop delay over the last interval, in ms; Infinity when the loop was held the whole interval. */
  delayMs = 0
  /** Event-loop utilisation over the last interval, 0 to 1. */
  utilization = 0
  readonly #delays: IntervalHistogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS })
  #busy: EventLoopUtilization = performance.eventLoopUtilization()

  constructor () {
    this.#delays.enable()
  }

  sample (): void {
    const { mean } = this.#delays
    // No tick of the monitor's timer at all in the interval: nothing ran but what held the loop.
    this.delayMs = Number.isNaN(mean) ? Infinity : Math.max(0, mean / 1e6 - RESOLUTION_MS)
    this.#delays.reset()
    const busy = performance.eventLoopUtilization()
    this.utilization = performance.eventLoopUtilization(busy, this.#busy).utilization
    this.#busy = busy
  }

  stop (): void {
    this.#delays.disable()
  }
}
