// The compiled service as a child process, for the scripts that drive it from outside (`npm run
// test:browser`, `npm run test:dashboard`); both build it first.
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { CONFIG_VARIABLES } from '../../dist/lib/config.js'

const ROOT = join(import.meta.dirname, '..', '..')

/**
 * `node dist/server.js` with the dev issuer on 127.0.0.1:`port`, from `cwd` (an empty directory, so that no
 * .env is read), with none of this shell's configuration (a production NODE_ENV, a real issuer) but `env`.
 */
export function startService (port, cwd, env = {}) {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => !CONFIG_VARIABLES.includes(name)))
  const child = spawn(process.execPath, [join(ROOT, 'dist', 'server.js')], {
    cwd,
    env: { ...inherited, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  child.stdout.setEncoding('utf8').on('data', (chunk) => { output += chunk })
  child.stderr.setEncoding('utf8').on('data', (chunk) => { output += chunk })
  const exited = new Promise((resolve) => child.on('exit', resolve))
  return {
    output: () => output,
    stop: async () => { child.kill('SIGTERM'); return exited },
    /** For a process 'exit' handler, where nothing can be awaited. */
    kill: () => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') },
  }
}
