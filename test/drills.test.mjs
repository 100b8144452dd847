// The short reliability drills of issue 11 (drills/drills.mjs), run against the compiled service. They run
// in a process of their own (drills/run.mjs), started with a bare environment, so that neither the test
// runner's coverage hooks nor its TypeScript loader slow the load generator, the issuer or the service
// down; each drill reports a JSON line, and each of its checks is an assertion here.
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import t from 'tap'

const ROOT = join(import.meta.dirname, '..')
// About two minutes on the project's machine; the bound leaves room for a machine busy with other tests.
t.setTimeout(8 * 60_000)

const child = spawn(process.execPath, [join(ROOT, 'drills', 'run.mjs'), '--json'], {
  cwd: ROOT,
  // A bare environment; no coverage either (tap's process hooks would otherwise follow the service in).
  env: { PATH: process.env.PATH, _TAPJS_PROCESSINFO_COVERAGE_: '0' },
  stdio: ['ignore', 'pipe', 'pipe'],
})
t.teardown(() => child.kill('SIGKILL'))
let stderr = ''
child.stderr.setEncoding('utf8').on('data', (chunk) => { stderr = (stderr + chunk).slice(-10_000) })
const closed = new Promise((resolve) => child.on('close', resolve))

// Every line is read before any assertion is made: tap ends a test whose subtests are all done.
const messages = []
for await (const line of createInterface({ input: child.stdout })) messages.push(JSON.parse(line))
const code = await closed

for (const message of messages) {
  if (message.planned !== undefined) continue
  if (message.calibration !== undefined) {
    t.comment(`capacity C = ${message.calibration.capacity}/s (p99 under 50 ms): ${JSON.stringify(message.calibration.steps)}`)
    continue
  }
  t.test(`${message.drill} (${message.seconds} s)`, (t) => {
    for (const { name, ok, detail } of message.checks) {
      t.ok(ok, `${name}: ${detail}`)
    }
    t.comment(`figures: ${JSON.stringify(message.figures)}`)
    for (const [i, attempt] of (message.failedAttempts ?? []).entries()) {
      t.comment(`attempt ${i + 1} failed, and the drill was run again: ${JSON.stringify(attempt)}`)
    }
    t.end()
  })
}
const planned = messages.find((message) => message.planned !== undefined)?.planned ?? []
const reported = messages.filter((message) => message.drill !== undefined).map((message) => message.drill)
// drills/run.mjs exits 3 when a check failed (reported above), anything else but 0 when it broke down
t.ok(code === 0 || code === 3, `the drills ran to their end (exit code ${code})${code === 0 || code === 3 ? '' : `:\n${stderr}`}`)
t.ok(planned.length >= 10, `the drills of npm test were planned (${planned.join(', ')})`)
t.same(reported, planned, 'every drill planned reported its checks')
