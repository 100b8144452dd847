import { spawn } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CONFIG_VARIABLES } from '../../lib/config.js'

interface Tap {
  teardown: (fn: () => unknown) => void
}

export interface ServerProcess {
  /** Resolves with the first stdout line matching `pattern` (rejects after 15 s). */
  waitFor: (pattern: RegExp) => Promise<string>
  stdout: () => string
  stderr: () => string
  exited: Promise<number | null>
  kill: (signal: NodeJS.Signals) => void
}

const ROOT = join(import.meta.dirname, '..', '..')
const SERVER = join(ROOT, 'server.ts')

/**
 * Runs server.ts as its own process, the way `npm start` does (with the test runner's TypeScript and
 * coverage hooks), in an empty directory so that no local .env is read, and with only `env` as config.
 */
export function startServerProcess (t: Tap, env: Record<string, string>): ServerProcess {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => !CONFIG_VARIABLES.includes(name)))
  const child = spawn(process.execPath, [...process.execArgv, SERVER], {
    cwd: mkdtempSync(join(tmpdir(), 'server-')),
    // the same TypeScript settings as this process, though it runs elsewhere
    env: { ...inherited, TS_NODE_PROJECT: join(ROOT, 'tsconfig.json'), METRICS_PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  const watchers: { pattern: RegExp, resolve: (line: string) => void }[] = []
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk
    for (const watcher of [...watchers]) {
      const line = stdout.split('\n').find((candidate) => watcher.pattern.test(candidate))
      if (line !== undefined) {
        watchers.splice(watchers.indexOf(watcher), 1)
        watcher.resolve(line)
      }
    }
  })
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk })
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  t.teardown(() => { child.kill('SIGKILL') })

  return {
    waitFor: (pattern) => new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no line matching ${pattern} in:\n${stdout}\n${stderr}`)), 15_000)
      watchers.push({ pattern, resolve: (line) => { clearTimeout(timer); resolve(line) } })
      child.stdout.emit('data', '')
    }),
    stdout: () => stdout,
    stderr: () => stderr,
    exited,
    kill: (signal) => child.kill(signal),
  }
}
