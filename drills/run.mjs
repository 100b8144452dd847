// `node drills/run.mjs [name ...]`: the drills that npm test runs (test/drills.test.mjs starts this with
// --json and reads JSON lines: the drills planned, the calibration, then one per drill); by hand, a
// readable line per check.
// Names pick drills by a part of their name, e.g. `node drills/run.mjs smuggling slowloris`.
import { describe, runDrills } from './drills.mjs'
import { ensureBuilt } from './harness.mjs'

const json = process.argv.includes('--json')
const only = process.argv.slice(2).filter((arg) => arg !== '--json')
ensureBuilt()
const { results } = await runDrills(['test'], {
  only,
  limitMs: 90_000,
  // A drill is tried twice before it fails (see runDrills); npm run soak tries every drill once.
  retries: 1,
  onPlan: (planned) => console.log(json ? JSON.stringify({ planned }) : `drills: ${planned.join(', ')}`),
  onResult: (result) => console.log(json ? JSON.stringify(result) : describe(result)),
  onCalibration: (calibration) => {
    console.log(json ? JSON.stringify({ calibration }) : `C = ${calibration.capacity}/s: ${JSON.stringify(calibration.steps)}`)
  },
})
// 3: a check failed (0: all passed; a crash exits 1)
process.exitCode = results.every(({ checks }) => checks.every(({ ok }) => ok)) ? 0 : 3
