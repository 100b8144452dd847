import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { buildApp } from './helpers/app.js'

// The README runs these on a fresh clone; they run here against the real app (npm test builds dist/ first).

t.test('examples/dpop-client.mjs: a bound token from the dev issuer, fresh proofs accepted, a replay and a Bearer use refused', async (t) => {
  const app = await buildApp(t, undefined)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  // Run as a user runs it; an example is documentation that runs, so it stays out of the coverage count.
  const { stdout } = await promisify(execFile)(process.execPath, [join(import.meta.dirname, '..', 'examples', 'dpop-client.mjs'), `http://localhost:${port}`], { env: { PATH: process.env.PATH, _TAPJS_PROCESSINFO_COVERAGE_: '0' } })
  t.match(stdout, /POST \/dev\/token -> 200, token_type DPoP/)
  t.match(stdout, /the same proof again: 401 DPoP proof has been used before \(invalid_dpop_proof\)/)
  t.match(stdout, /as expected: bound token accepted with fresh proofs only/)
})
