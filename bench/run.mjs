// `npm run bench`: the service (compiled, production settings, log level warn) against bare Fastify (bench/
// baseline.mjs), scenario by scenario, alternating service and baseline over several rounds; medians.
// Settings: BENCH_DURATION (seconds per run, default 5), BENCH_ROUNDS (default 3), BENCH_CONNECTIONS (64),
// BENCH_ONLY (scenario letters to run, e.g. "ad"; default all).
// Writes bench/results.json and prints a table. The issuer is the service's own dev issuer, in this process.
import autocannon from 'autocannon'
import { spawn } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { join } from 'node:path'
import { startDevIssuer } from '../dist/lib/dev-issuer.js'

const DURATION = Number(process.env.BENCH_DURATION ?? 5)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 64)
const AUDIENCE = 'https://api.bench.test'
const ROOT = join(import.meta.dirname, '..')
const TICK_US = 1e6 / 100 // /proc reports CPU time in clock ticks, 100 per second on Linux

const issuer = await startDevIssuer(AUDIENCE)
console.log('minting tokens...')
const mint = (claims = {}) => issuer.mint({ expiresIn: 3600, ...claims }).access_token
const token = mint()
const scoped = mint({ scope: 'read:messages' })
const badSignature = `${token.slice(0, token.lastIndexOf('.') + 1)}${Buffer.from('not the signature').toString('base64url')}`
const clients = Array.from({ length: 1_000 }, (_, i) => mint({ sub: `client-${i}` }))
const everyRequestNew = Array.from({ length: 20_000 }, (_, i) => mint({ sub: `user-${i}` }))

/** Requests that each carry the next token of `tokens`, round-robin. */
function rotating (tokens) {
  let next = 0
  return [{ setupRequest: (request) => ({ ...request, headers: { ...request.headers, authorization: `Bearer ${tokens[next++ % tokens.length]}` } }) }]
}

const ONLY = process.env.BENCH_ONLY ?? 'abcdef'
const scenarios = [
  { id: 'a', name: 'reused token', path: '/api/private', headers: { authorization: `Bearer ${token}` }, status: 200 },
  { id: 'b', name: 'reused scoped token', path: '/api/private-scoped', headers: { authorization: `Bearer ${scoped}` }, status: 200 },
  { id: 'c', name: '1,000 clients', path: '/api/private', requests: rotating(clients), status: 200 },
  { id: 'd', name: 'every request a new token', path: '/api/private', requests: rotating(everyRequestNew), status: 200 },
  { id: 'e', name: 'bad signature', path: '/api/private', headers: { authorization: `Bearer ${badSignature}` }, status: 401 },
  { id: 'f', name: 'public route', path: '/api/public', status: 200 },
].filter((scenario) => ONLY.includes(scenario.id))

async function startServer (script, port) {
  const child = spawn(process.execPath, [script], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, NODE_ENV: 'production', LOG_LEVEL: 'warn', PORT: String(port), AUTH0_ISSUER_URL: issuer.issuer, AUTH0_AUDIENCE: AUDIENCE },
    stdio: ['ignore', 'inherit', 'inherit'],
  })
  const url = `http://127.0.0.1:${port}`
  for (let i = 0; i < 100; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100))
    if ((await fetch(`${url}/ready`).catch(() => undefined))?.ok) return { child, url }
  }
  throw new Error(`${script} did not become ready`)
}

function cpuTicks (pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return Number(fields[11]) + Number(fields[12]) // utime + stime
}

function rssBytes (pid) {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * 1024
}

async function measure (server, scenario, duration) {
  const { pid } = server.child
  let peakRss = rssBytes(pid)
  const sampler = setInterval(() => { peakRss = Math.max(peakRss, rssBytes(pid)) }, 100)
  const ticksBefore = cpuTicks(pid)
  const result = await autocannon({
    url: `${server.url}${scenario.path}`,
    connections: CONNECTIONS,
    duration,
    headers: scenario.headers,
    requests: scenario.requests,
    expectBody: undefined,
  })
  clearInterval(sampler)
  const ticks = cpuTicks(pid) - ticksBefore
  const unexpected = result.statusCodeStats ? Object.entries(result.statusCodeStats).filter(([code]) => Number(code) !== scenario.status).reduce((sum, [, { count }]) => sum + count, 0) : 0
  return {
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    non2xx: result.non2xx,
    unexpectedStatus: unexpected + result.errors + result.timeouts,
    cpuUsPerRequest: (ticks * TICK_US) / result.requests.total,
    peakRssMb: peakRss / 2 ** 20,
  }
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = sorted.length >> 1
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}
const medians = (runs) => Object.fromEntries(Object.keys(runs[0]).map((key) => [key, median(runs.map((run) => run[key]))]))

const service = await startServer(join(ROOT, 'dist', 'server.js'), 3101)
const baseline = await startServer(join(ROOT, 'bench', 'baseline.mjs'), 3102)
const results = []
try {
  for (const scenario of scenarios) {
    // The baseline never checks a token: for (e) it answers 200 where the service answers 401.
    const forBaseline = { ...scenario, status: 200 }
    await measure(service, scenario, 1) // warm-up, not counted
    await measure(baseline, forBaseline, 1)
    const runs = { service: [], baseline: [] }
    for (let round = 0; round < ROUNDS; round++) {
      runs.service.push(await measure(service, scenario, DURATION))
      runs.baseline.push(await measure(baseline, forBaseline, DURATION))
    }
    const ours = medians(runs.service)
    const base = medians(runs.baseline)
    const row = {
      scenario: `(${scenario.id}) ${scenario.name}`,
      service: ours,
      baseline: base,
      ratio: ours.rps / base.rps,
      cpuRatio: ours.cpuUsPerRequest / base.cpuUsPerRequest,
      p99Ratio: ours.p99 / base.p99,
      rssRatio: ours.peakRssMb / base.peakRssMb,
      rounds: runs,
    }
    results.push(row)
    console.log(`${row.scenario}: ${ours.rps.toFixed(0)} req/s vs ${base.rps.toFixed(0)} (ratio ${row.ratio.toFixed(2)}), CPU ${ours.cpuUsPerRequest.toFixed(1)} vs ${base.cpuUsPerRequest.toFixed(1)} µs/req, p99 ${ours.p99} vs ${base.p99} ms, ${ours.unexpectedStatus} unexpected`)
  }
} finally {
  service.child.kill('SIGTERM')
  baseline.child.kill('SIGTERM')
  await issuer.close()
}

const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version}`
const settings = { durationSeconds: DURATION, rounds: ROUNDS, connections: CONNECTIONS }
writeFileSync(join(ROOT, 'bench', 'results.json'), `${JSON.stringify({ date: new Date().toISOString(), machine, settings, results }, null, 2)}\n`)

const header = '| scenario | req/s (service / bare) | ratio | p50 ms | p99 ms (service / bare) | unexpected status | CPU µs/req (service / bare) | peak RSS MB (service / bare) |'
console.log(`\n${machine}; ${CONNECTIONS} connections, ${DURATION} s × ${ROUNDS} rounds, medians\n`)
console.log(header)
console.log(header.replace(/[^|]+/g, ' --- '))
for (const row of results) {
  const { service: s, baseline: b } = row
  console.log(`| ${row.scenario} | ${s.rps.toFixed(0)} / ${b.rps.toFixed(0)} | **${row.ratio.toFixed(2)}** | ${s.p50} / ${b.p50} | ${s.p99} / ${b.p99} | ${s.unexpectedStatus} | ${s.cpuUsPerRequest.toFixed(1)} / ${b.cpuUsPerRequest.toFixed(1)} | ${s.peakRssMb.toFixed(0)} / ${b.peakRssMb.toFixed(0)} |`)
}
