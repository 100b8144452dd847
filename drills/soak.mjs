// `npm run soak` (about 20 minutes): every drill, the long ones too (overload for a minute at 2C and 5C,
// five minutes of distinct junk tokens and of distinct valid tokens watching the service's memory, three
// minutes of a flapping hostile issuer), on one quiet machine. Prints each check, then `N passed, M failed`
// (checks), writes the figures to drills/soak-results.json, and exits 1 if a check failed.
import { writeFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { join } from 'node:path'
import { describe, runDrills } from './drills.mjs'
import { ensureBuilt } from './harness.mjs'

ensureBuilt()
const started = Date.now()
const { calibration, results } = await runDrills(['test', 'soak'], {
  limitMs: 10 * 60_000,
  onCalibration: ({ capacity, steps }) => console.log(`C = ${capacity}/s (p99 under 50 ms): ${JSON.stringify(steps)}`),
  onResult: (result) => console.log(describe(result)),
})
const checks = results.flatMap((result) => result.checks)
const passed = checks.filter(({ ok }) => ok).length
const failed = checks.length - passed
const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version}`
writeFileSync(join(import.meta.dirname, 'soak-results.json'), `${JSON.stringify({ date: new Date().toISOString(), machine, minutes: Math.round((Date.now() - started) / 6000) / 10, passed, failed, calibration, results }, null, 2)}\n`)
console.log(`\n${passed} passed, ${failed} failed (${Math.round((Date.now() - started) / 60_000)} min; figures in drills/soak-results.json)`)
process.exitCode = failed === 0 ? 0 : 1
