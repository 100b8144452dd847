// `node drills/sweep.mjs` (about 5 minutes, after `npm run build`): how each shedding setting does at
// 0.8C, 2C and 5C of the overload drills' traffic (valid tokens never seen, open loop, clients that give up
// after 2 s), to choose OVERLOAD_MAX_EVENT_LOOP_DELAY_MS and OVERLOAD_MAX_EVENT_LOOP_UTILIZATION. Prints a
// table: goodput (2xx a second, in C), the share shed, the share lost (timed out or never sent), p50 and
// p99. A good setting sheds nothing at 0.8C and keeps the most goodput, with nothing lost, at 2C and 5C.
import { Lab } from './drills.mjs'
import { ensureBuilt, sleep, startService, tally } from './harness.mjs'

const SETTINGS = [
  ['off', { OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '0' }],
  ['delay 100 ms', { OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '100' }],
  ['delay 50 ms', { OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '50' }],
  ['delay 30 ms', { OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '30' }],
  ['delay 20 ms', { OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '20' }],
  ['delay 15 ms (default)', { OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '15' }],
  ['delay 10 ms', { OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '10' }],
  ['utilisation 0.98', { OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '0', OVERLOAD_MAX_EVENT_LOOP_UTILIZATION: '0.98' }],
  ['delay 20 ms or utilisation 0.98', { OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '20', OVERLOAD_MAX_EVENT_LOOP_UTILIZATION: '0.98' }],
]
const DURATION_MS = 5000

ensureBuilt()
const lab = await Lab.start()
const C = await lab.capacity()
console.log(`C = ${C}/s; ${DURATION_MS / 1000} s at each rate, a fresh service for each setting\n`)
console.log('| setting | 0.8C: goodput, shed, lost, p50/p99 ms | 2C | 5C |')
console.log('| --- | --- | --- | --- |')
await lab.load.prepare(lab.fresh)
for (const [name, env] of SETTINGS) {
  const service = await startService(lab.issuer, env)
  const cells = []
  try {
    await lab.load.run({ port: service.port, rate: Math.round(C / 2), durationMs: 1000, varyScheme: true }) // warm-up
    for (const multiple of [0.8, 2, 5]) {
      const result = await lab.load.run({ port: service.port, rate: Math.round(multiple * C), durationMs: DURATION_MS, connections: 32, maxConnections: 1024, timeoutMs: 2000, varyScheme: true })
      const { ok, non2xx, lost } = tally(result)
      const share = (count) => `${Math.round(100 * count / result.issued)}%`
      cells.push(`${(ok / (DURATION_MS / 1000) / C).toFixed(2)}C, ${share(non2xx)}, ${share(lost)}, ${Math.round(result.p50)}/${Math.round(result.p99)}`)
      await sleep(2000) // the backlog drains before the next rate
    }
  } finally {
    await service.stop()
  }
  console.log(`| ${name} | ${cells.join(' | ')} |`)
}
await lab.close()
