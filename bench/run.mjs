// `npm run bench`: the service (compiled, production settings, log level warn) against bare Fastify and against
// the ideal paths (bench/baseline.mjs), scenario by scenario, in the same run, with the load generator of
// bench/load.mjs in a process of its own. Every round starts fresh processes, then for each scenario measures
// its targets forwards and backwards (A B C C B A, each round starting from another target, once every server
// has finished starting), so that drift falls on all of them alike; a round's figure
// for a target is the mean of its two runs, a round's ratio compares figures of the same round, and the table
// shows medians over rounds (and the spread of the ratio).
// Settings: BENCH_DURATION (seconds per run, default 1), BENCH_ROUNDS (default 7), BENCH_CONNECTIONS (64),
// BENCH_ONLY (scenario letters to run, e.g. "ad"; default all), BENCH_WARMUP (seconds of uncounted load per target
// and scenario, default 2: the figures are steady-state ones; in (c), a fresh service verifies each of the 1,000
// tokens twice, once more than the ideal path, before it remembers them, and its JIT is still cold for that work:
// it served 2,600 requests a second in its first 0.6 s and reached its steady rate after about 1 s).
// Writes bench/results.json and prints a table. The issuer is the service's own dev issuer, in this process.
import { fork, spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync, writeFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { join } from 'node:path'
import { startDevIssuer } from '../dist/lib/dev-issuer.js'
import { accessTokenHash, DpopKey } from '../dist/lib/dpop/client.js'

const DURATION = Number(process.env.BENCH_DURATION ?? 1)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 7)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 64)
const WARMUP = Number(process.env.BENCH_WARMUP ?? 2)
const ONLY = process.env.BENCH_ONLY ?? 'abcdefg'
const AUDIENCE = 'https://api.bench.test'
const ROOT = join(import.meta.dirname, '..')
const TICK_US = 1e6 / 100 // /proc reports CPU time in clock ticks, 100 per second on Linux

const issuer = await startDevIssuer(AUDIENCE)
console.log('minting tokens...')
const mint = (claims = {}) => issuer.mint({ expiresIn: 3600, ...claims }).access_token
const token = mint()
const badSignature = `${token.slice(0, token.lastIndexOf('.') + 1)}${Buffer.from('not the signature').toString('base64url')}`

const request = (path, token, { scheme = 'Bearer', proof } = {}) =>
  `GET ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\n${token === undefined ? '' : `authorization: ${scheme} ${token}\r\n`}${proof === undefined ? '' : `dpop: ${proof}\r\n`}\r\n`
const tokens = (count, prefix) => Array.from({ length: count }, (_, i) => mint({ sub: `${prefix}-${i}` }))

// (g): a DPoP-bound token; every request needs a proof never used before, so the service gets fresh ones
// for every run (made before it starts), while the baselines, which read no proof, reuse one set.
const dpopKey = DpopKey.generate('ES256')
const bound = mint({ jkt: dpopKey.jkt })
const DPOP_PROOFS_PER_RUN = Number(process.env.BENCH_DPOP_PROOFS ?? 8000)
const dpopRequests = (count) => Array.from({ length: count }, () =>
  request('/api/private', bound, { scheme: 'DPoP', proof: dpopKey.proof({ htm: 'GET', htu: 'http://127.0.0.1/api/private', ath: accessTokenHash(bound) }) }))

// The control: the ideal reused-token server serves every scenario it can, so that it has the service's
// history when (f) runs. Its public route runs bare's code; only its history differs, so its ratio to bare is
// what serving authenticated traffic costs a process's public route, whoever authenticates.
const CONTROL = 'cached'

// `floor`: the ideal path the scenario is held against, besides bare Fastify; `target`: the least ratio to it;
// `control`: also held against the control; `idealStatus`: what the ideal paths answer (bare always 200);
// `ideal: false`: the ideal paths cannot serve it (they speak no DPoP), so the control sits it out.
const scenarios = [
  // (a) is also measured with metrics off, and with the opt-in request-duration histogram on.
  { id: 'a', name: 'reused token', status: 200, floor: 'cached', target: 0.90, variants: ['metrics off', 'duration histogram'], requests: () => [request('/api/private', token)] },
  { id: 'b', name: 'reused scoped token', status: 200, floor: 'cached', target: 0.90, requests: () => [request('/api/private-scoped', mint({ scope: 'read:messages' }))] },
  { id: 'c', name: '1,000 tokens rotated', status: 200, floor: 'cached', target: 0.90, requests: () => tokens(1_000, 'client').map((t) => request('/api/private', t)) },
  { id: 'd', name: '20,000 tokens, each new', status: 200, floor: 'uncached', target: 0.90, requests: () => tokens(20_000, 'user').map((t) => request('/api/private', t)) },
  { id: 'e', name: 'bad signature (401)', status: 401, idealStatus: 401, floor: 'bare', target: 0.50, requests: () => [request('/api/private', badSignature)] },
  { id: 'f', name: 'public route', status: 200, floor: 'bare', target: 0.97, control: CONTROL, requests: () => [request('/api/public')] },
  { id: 'g', name: 'DPoP-bound token, fresh proof each', status: 200, floor: 'bare', target: undefined, ideal: false, requests: () => dpopRequests(1000), freshForService: () => dpopRequests(DPOP_PROOFS_PER_RUN) },
].filter((scenario) => ONLY.includes(scenario.id))

// Every process this run starts ends with it, whatever happens.
const children = new Set()
process.on('exit', () => children.forEach((child) => child.kill()))

// The servers on one core, this process and the load generator on the other (where taskset exists): left
// to the scheduler, a run's figure depended on which of two unequal vCPUs its server landed on, and the
// same comparison moved by 20% from round to round.
const pin = (pid, cpu) => spawnSync('taskset', ['-pc', String(cpu), String(pid)], { stdio: 'ignore' }).status === 0
const PINNED = cpus().length >= 2 && pin(process.pid, 0)

async function startServer (name, script, port, env = {}, service = script.endsWith('server.js')) {
  const [command, args] = PINNED ? ['taskset', ['-c', '1', process.execPath, script]] : [process.execPath, [script]]
  const child = spawn(command, args, {
    cwd: ROOT,
    // Production settings; the local issuer is plain http, which production accepts only on loopback and
    // only as a configured AUTH0_JWKS_URL (never from discovery).
    env: { PATH: process.env.PATH, NODE_ENV: 'production', LOG_LEVEL: 'warn', PORT: String(port), METRICS_PORT: '0', AUTH0_ISSUER_URL: issuer.issuer, AUTH0_JWKS_URL: `${issuer.issuer}.well-known/jwks.json`, AUTH0_AUDIENCE: AUDIENCE, ...env },
    stdio: ['ignore', 'inherit', 'inherit'],
  })
  children.add(child)
  child.on('exit', () => children.delete(child))
  for (let i = 0; i < 100; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100))
    if ((await fetch(`http://127.0.0.1:${port}/ready`).catch(() => undefined))?.ok) return { name, child, port, service }
  }
  throw new Error(`${name} did not become ready`)
}

function cpuTicks (pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return Number(fields[11]) + Number(fields[12]) // utime + stime
}

function rssBytes (pid) {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * 1024
}

const generator = fork(join(ROOT, 'bench', 'load.mjs'), { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
children.add(generator)
if (PINNED) pin(generator.pid, 0)
async function ask (message, reply) {
  const answer = once(generator, 'message')
  generator.send(message)
  const [response] = await answer
  if (response.type !== reply) throw new Error(`load generator answered ${response.type}`)
  return response
}

async function measure (server, scenario, seconds) {
  const { pid } = server.child
  const once = server.service && scenario.freshForService !== undefined
  if (once) {
    await ask({ type: 'prepare', requests: scenario.freshForService() }, 'prepared')
  } else if (scenario.freshForService !== undefined) {
    await ask({ type: 'prepare', requests: requestsOf.get(scenario) }, 'prepared')
  }
  let peakRss = rssBytes(pid)
  const sampler = setInterval(() => { peakRss = Math.max(peakRss, rssBytes(pid)) }, 100)
  const serverTicks = cpuTicks(pid)
  const generatorTicks = cpuTicks(generator.pid)
  const result = await ask({ type: 'run', port: server.port, durationMs: seconds * 1000, connections: CONNECTIONS, once }, 'result')
  clearInterval(sampler)
  const expected = server.service ? scenario.status : server.name === 'bare' ? 200 : scenario.idealStatus ?? 200
  const unexpected = Object.entries(result.statuses).reduce((sum, [status, count]) => sum + (Number(status) === expected ? 0 : count), 0)
  if (unexpected + result.errors > 0) {
    const statuses = Object.fromEntries(Object.entries(result.statuses).filter(([status]) => Number(status) !== expected))
    console.log(`(${scenario.id}) ${server.name}: unexpected answers ${JSON.stringify({ ...statuses, errors: result.errors })}`)
  }
  return {
    rps: result.requests / (result.elapsedMs / 1000),
    p50: result.p50,
    p99: result.p99,
    unexpected: unexpected + result.errors,
    cpuUs: ((cpuTicks(pid) - serverTicks) * TICK_US) / result.requests,
    generatorCpuUs: ((cpuTicks(generator.pid) - generatorTicks) * TICK_US) / result.requests,
    peakRssMb: peakRss / 2 ** 20,
  }
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = sorted.length >> 1
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}
const mean = (runs) => Object.fromEntries(Object.keys(runs[0]).map((key) => [key, runs.reduce((sum, run) => sum + run[key], 0) / runs.length]))
const medians = (runs) => Object.fromEntries(Object.keys(runs[0]).map((key) => [key, median(runs.map((run) => run[key]))]))

/** Fresh processes for every round: one process can run a few percent faster or slower than another for its whole life. */
async function startServers () {
  const servers = await Promise.all([
    startServer('service', join(ROOT, 'dist', 'server.js'), 3101),
    startServer('bare', join(ROOT, 'bench', 'baseline.mjs'), 3102, { BASELINE: 'bare' }),
    startServer('cached', join(ROOT, 'bench', 'baseline.mjs'), 3103, { BASELINE: 'cached' }),
    startServer('uncached', join(ROOT, 'bench', 'baseline.mjs'), 3104, { BASELINE: 'uncached' }),
    startServer('metrics off', join(ROOT, 'dist', 'server.js'), 3105, { METRICS_PORT: 'off' }),
    startServer('duration histogram', join(ROOT, 'dist', 'server.js'), 3106, { METRICS_REQUEST_DURATION: 'true' }),
  ])
  return Object.fromEntries(servers.map((server) => [server.name, server]))
}

/**
 * Until the servers have finished starting (loading, compiling, the first key fetch), at most 10 s: the
 * first server warmed up while the others were still starting on its core ran about 15% slower for its
 * whole life, and that server was always the service.
 */
async function settled (servers) {
  const pids = Object.values(servers).map((server) => server.child.pid)
  const busyTicks = () => pids.reduce((sum, pid) => sum + cpuTicks(pid), 0)
  for (let waited = 0; waited < 10_000; waited += 250) {
    const before = busyTicks()
    await new Promise((resolve) => setTimeout(resolve, 250))
    if (busyTicks() - before <= 1) return
  }
}

async function stopServers (servers) {
  await Promise.all(Object.values(servers).map((server) => {
    server.child.kill('SIGTERM')
    return once(server.child, 'exit')
  }))
}

const requestsOf = new Map(scenarios.map((scenario) => [scenario, scenario.requests()]))
const roundsOf = new Map(scenarios.map((scenario) => [scenario, []]))
try {
  for (let round = 0; round < ROUNDS; round++) {
    const servers = await startServers()
    await settled(servers)
    try {
      for (const scenario of scenarios) {
        await ask({ type: 'prepare', requests: requestsOf.get(scenario) }, 'prepared')
        const targets = [...new Set(['service', ...(scenario.variants ?? []), 'bare', scenario.floor, ...(scenario.ideal === false ? [] : [CONTROL])])].map((name) => servers[name])
        for (const server of targets) await measure(server, scenario, WARMUP) // warm-up, not counted
        const runs = Object.fromEntries(targets.map((server) => [server.name, []]))
        // Each round starts from another target, so that none always has the first and last runs.
        const order = targets.map((_, i) => targets[(i + round) % targets.length])
        for (const server of [...order, ...[...order].reverse()]) {
          runs[server.name].push(await measure(server, scenario, DURATION))
        }
        roundsOf.get(scenario).push(Object.fromEntries(targets.map((server) => [server.name, mean(runs[server.name])])))
      }
    } finally {
      await stopServers(servers)
    }
    console.log(`round ${round + 1} of ${ROUNDS} done`)
  }
} finally {
  generator.kill()
  await issuer.close()
}

// A row for the service and one for each of its variants, each held against the scenario's floor.
const results = scenarios.flatMap((scenario) => {
  const rounds = roundsOf.get(scenario)
  const targets = Object.keys(rounds[0])
  const figures = Object.fromEntries(targets.map((name) => [name, medians(rounds.map((round) => round[name]))]))
  return ['service', ...(scenario.variants ?? [])].map((variant) => {
    const ratiosTo = (name) => rounds.map((round) => round[variant].rps / round[name].rps)
    const toFloor = ratiosTo(scenario.floor)
    const toControl = scenario.control && ratiosTo(scenario.control)
    return {
      scenario: `(${scenario.id}) ${scenario.name}${variant === 'service' ? '' : `, ${variant}`}`,
      floor: scenario.floor,
      target: scenario.target,
      ratioToFloor: median(toFloor),
      ratioToBare: median(ratiosTo('bare')),
      ratioSpread: [Math.min(...toFloor), Math.max(...toFloor)],
      met: scenario.target === undefined || median(toFloor) >= scenario.target,
      control: toControl && { name: scenario.control, ratio: median(toControl), spread: [Math.min(...toControl), Math.max(...toControl)], controlToBare: median(rounds.map((round) => round[scenario.control].rps / round.bare.rps)) },
      unexpected: rounds.reduce((sum, round) => sum + round[variant].unexpected * 2, 0),
      figures: { ...figures, service: figures[variant] },
      rounds,
    }
  })
})

const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version}`
const settings = { durationSeconds: DURATION, warmupSeconds: WARMUP, rounds: ROUNDS, connections: CONNECTIONS, pinned: PINNED }
writeFileSync(join(ROOT, 'bench', 'results.json'), `${JSON.stringify({ date: new Date().toISOString(), machine, settings, results }, null, 2)}\n`)

const fixed = (value, digits = 0) => value.toFixed(digits)
console.log(`\n${machine}; ${CONNECTIONS} connections, ${DURATION} s runs after ${WARMUP} s of warm-up, ${ROUNDS} ABBA rounds, medians${PINNED ? '; servers on CPU 1, load generator on CPU 0' : ''}\n`)
const header = '| scenario | req/s: service / floor / bare | ratio to floor (target) | met | spread | ratio to bare | p99 ms: service / floor | CPU µs/req: service / floor / bare | generator CPU µs/req | wrong answers | peak RSS MB |'
console.log(header)
console.log(header.replace(/[^|]+/g, ' --- '))
for (const row of results) {
  const { service: s, bare: b } = row.figures
  const f = row.figures[row.floor]
  const floorName = row.floor === 'bare' ? 'bare' : `ideal ${row.floor}`
  console.log(`| ${row.scenario} | ${fixed(s.rps)} / ${row.floor === 'bare' ? '-' : fixed(f.rps)} / ${fixed(b.rps)} | **${fixed(row.ratioToFloor, 2)}** of ${floorName} ${row.target === undefined ? '(reported)' : `(≥ ${row.target})`} | ${row.met ? 'yes' : '**no**'} | ${row.ratioSpread.map((r) => fixed(r, 2)).join('-')} | ${fixed(row.ratioToBare, 2)} | ${fixed(s.p99, 1)} / ${fixed(f.p99, 1)} | ${fixed(s.cpuUs, 1)} / ${row.floor === 'bare' ? '-' : fixed(f.cpuUs, 1)} / ${fixed(b.cpuUs, 1)} | ${fixed(s.generatorCpuUs, 1)} | ${row.unexpected} | ${fixed(s.peakRssMb)} |`)
}
for (const { scenario, control } of results.filter((row) => row.control)) {
  console.log(`\n${scenario}: **${fixed(control.ratio, 2)}** (${control.spread.map((r) => fixed(r, 2)).join('-')}) of the ideal ${control.name} server after the same traffic; that server, running bare's public route, reaches ${fixed(control.controlToBare, 2)} of bare`)
}
