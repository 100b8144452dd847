// The dashboard test (`npm run test:dashboard`): deploy/grafana/dashboard.json against a real Prometheus.
// Debian's prometheus (installed with apt-get when missing; its service is never started: the binary runs
// here as a child, with a config and a data directory of its own) scrapes the compiled service's metrics
// listener every 2 s while a modest mixed traffic runs against the service on 127.0.0.1: reused, new,
// unscoped, expired, DPoP-bound and junk tokens, none at all, the public route. Then every `expr` of every
// panel, with Grafana's variables filled in, goes through Prometheus's HTTP API and must parse and return
// at least one number; and Prometheus's own graph page (Grafana is not installable here) shows the key
// panels' queries in Debian's headless Chromium, saved as a screenshot. Not part of `npm test` or CI: it
// needs Prometheus and Chromium and takes about a minute and a half.
// Prints `N passed, M failed`; exits 1 on any failure. `--update-screenshot` also writes
// docs/screenshots/dashboard.png (the README's), if it is under 300 KB; `--seconds N` sets how long the
// traffic runs before the queries (default 60).
import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { accessTokenHash, DpopKey } from '../dist/lib/dpop/client.js'
import { ensureChromium, isLocal, keepLocal, launchChromium, saveScreenshot } from './helpers/chromium.mjs'
import { check, freePort, report, waitUntil } from './helpers/podman.mjs'
import { startService } from './helpers/service.mjs'

const ROOT = join(import.meta.dirname, '..')
const PROMETHEUS = '/usr/bin/prometheus'
const DASHBOARD = join(ROOT, 'deploy', 'grafana', 'dashboard.json')
const README_SCREENSHOT = join(ROOT, 'docs', 'screenshots', 'dashboard.png')
const README_SCREENSHOT_MAX_BYTES = 300 * 1024
const JOB = 'api-authz'
const SCRAPE_INTERVAL = '2s'
// What Grafana's $__rate_interval would be here is about 8 s (four scrape intervals); a little longer
// smooths the graphs of a short run.
const RATE_INTERVAL = '30s'
const TIMEOUT_MS = 30_000
// The key panels on the screenshot, one graph each, and which of the panel's queries.
const GRAPHS = [
  { title: /^Decisions per second/, refId: 'A' },
  { title: /cache hit ratio/, refId: 'A' },
  { title: /^Key-set health/, refId: 'B' }, // the age of the last good fetch: a sawtooth while renewals work
  { title: /^Request latency/, refId: 'B' }, // p99
  { title: /^Event-loop delay/, refId: 'A' },
]

const { values: options } = parseArgs({ options: { 'update-screenshot': { type: 'boolean' }, seconds: { type: 'string', default: '60' } } })
const trafficSeconds = Math.min(Math.max(Number(options.seconds) || 60, 10), 120)

// Every child is killed when this process exits, however it exits.
const children = []
process.on('exit', () => { for (const kill of children) kill() })
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(1))

function ensurePrometheus () {
  if (existsSync(PROMETHEUS)) return
  console.log(`${PROMETHEUS} is missing: installing Debian's prometheus (its service is not started here)`)
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit' })
  execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'prometheus'], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
}

/** Prometheus on 127.0.0.1:`port`, scraping the service's metrics at 127.0.0.1:`metricsPort` as job `JOB`. */
function startPrometheus (port, metricsPort, dir) {
  const config = join(dir, 'prometheus.yml')
  writeFileSync(config, [
    'global:',
    `  scrape_interval: ${SCRAPE_INTERVAL}`,
    `  evaluation_interval: ${SCRAPE_INTERVAL}`,
    'scrape_configs:',
    `  - job_name: ${JOB}`,
    '    static_configs:',
    `      - targets: ['127.0.0.1:${metricsPort}']`,
    '',
  ].join('\n'))
  const child = spawn(PROMETHEUS, [
    `--config.file=${config}`, `--web.listen-address=127.0.0.1:${port}`, `--storage.tsdb.path=${join(dir, 'data')}`, '--log.level=warn',
  ], { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.setEncoding('utf8').on('data', (chunk) => { output += chunk })
  child.stderr.setEncoding('utf8').on('data', (chunk) => { output += chunk })
  const exited = new Promise((resolve) => child.on('exit', resolve))
  children.push(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  return { output: () => output, stop: async () => { child.kill('SIGTERM'); return exited } }
}

/** An instant query; resolves with Prometheus's answer (`status`, `data` or `error`). */
async function query (prometheus, expr) {
  const response = await fetch(`${prometheus}/api/v1/query?${new URLSearchParams({ query: expr })}`)
  return response.json()
}

/** A panel's expression as Grafana would send it for this job; undefined if it names another variable. */
function substitute (expr) {
  const filled = expr.replace(/\$\{?job\}?(?!\w)/g, JOB).replace(/\$\{?__rate_interval\}?/g, RATE_INTERVAL)
  return /\$/.test(filled) ? undefined : filled
}

/** "3 series: allowed=12.5, insufficient_scope=1.2 ..." from an instant vector. */
function summarize (result) {
  const shown = result.slice(0, 6).map(({ metric, value }) => {
    const labels = Object.values(metric).join(' ')
    const number = Number(value[1])
    return `${labels ? `${labels}=` : ''}${Number.isFinite(number) ? Number(number.toPrecision(3)) : value[1]}`
  })
  return `${result.length} series: ${shown.join(', ')}${result.length > shown.length ? ' ...' : ''}`
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Mixed traffic from three callers, each waiting 30 ms between requests (about 80 requests a second in
 * all), until `stop()`. Each kind of request knows the status it must get; mismatches are counted by kind.
 */
async function startTraffic (base) {
  let requests = 0
  const mint = async (body, headers = {}) => {
    requests++
    const response = await fetch(`${base}/dev/token`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
    const { access_token: token } = await response.json()
    if (response.status !== 200 || typeof token !== 'string') throw new Error(`POST /dev/token answered ${response.status}`)
    return token
  }
  const scoped = await Promise.all([1, 2, 3].map(() => mint({ scope: 'read:messages' })))
  const plain = await Promise.all([1, 2].map(() => mint({})))
  const expiring = await mint({ expiresIn: 1 })
  const expiredFrom = Date.now() + 8_000 // its second, and the 5 s clock tolerance, are over
  const dpopKey = DpopKey.generate('ES256')
  const dpopToken = await mint({}, { dpop: dpopKey.proof({ htm: 'POST', htu: `${base}/dev/token` }) })
  const [header, payload, signature] = plain[0].split('.')
  const otherKid = () => {
    const fields = JSON.parse(Buffer.from(header, 'base64url').toString())
    return [Buffer.from(JSON.stringify({ ...fields, kid: `unknown-${Math.random().toString(36).slice(2)}` })).toString('base64url'), payload, signature].join('.')
  }
  const pick = (tokens) => tokens[Math.floor(Math.random() * tokens.length)]
  const get = async (path, authorization, headers = {}) => {
    requests++
    const response = await fetch(`${base}${path}`, { headers: { ...(authorization && { authorization }), ...headers } })
    await response.arrayBuffer()
    return response.status
  }
  // [weight, kind, expected status, request]
  const kinds = [
    [30, 'a reused read:messages token on /api/private-scoped', 200, () => get('/api/private-scoped', `Bearer ${pick(scoped)}`)],
    [15, 'a reused token on /api/private', 200, () => get('/api/private', `Bearer ${pick(plain)}`)],
    [5, 'a new token on /api/private', 200, async () => get('/api/private', `Bearer ${await mint({})}`)],
    [3, 'a new read:messages token on /api/private-scoped', 200, async () => get('/api/private-scoped', `Bearer ${await mint({ scope: 'read:messages' })}`)],
    [8, 'an unscoped token on /api/private-scoped', 403, () => get('/api/private-scoped', `Bearer ${pick(plain)}`)],
    [8, 'no token on /api/private', 401, () => get('/api/private')],
    [10, '/api/public', 200, () => get('/api/public')],
    [4, 'a DPoP-bound token with a fresh proof', 200, () => get('/api/private', `DPoP ${dpopToken}`, { dpop: dpopKey.proof({ htm: 'GET', htu: `${base}/api/private`, ath: accessTokenHash(dpopToken) }) })],
    [1, 'junk as a token', 401, () => get('/api/private', `Bearer junk.${Math.random().toString(36).slice(2)}.x`)],
    [1, 'a token naming an unknown kid', 401, () => get('/api/private', `Bearer ${otherKid()}`)],
    [1, 'a token with a tampered signature', 401, () => get('/api/private', `Bearer ${plain[1].slice(0, -4)}${Math.random() < 0.5 ? 'AAAA' : 'BBBB'}`)],
    [1, 'an expired token', 401, () => get('/api/private', `Bearer ${expiring}`)],
    [1, 'an unknown path', 404, () => get('/api/nothing-here')],
  ]
  const total = kinds.reduce((sum, [weight]) => sum + weight, 0)
  const sent = new Map(kinds.map(([, kind]) => [kind, { calls: 0, unexpected: [] }]))
  let stopped = false
  const caller = async () => {
    while (!stopped) {
      let draw = Math.random() * total
      const [, kind, expected, request] = kinds.find(([weight]) => (draw -= weight) < 0)
      if (kind === 'an expired token' && Date.now() < expiredFrom) continue
      const tally = sent.get(kind)
      tally.calls++
      const status = await request().catch((error) => error.code ?? error.message)
      if (status !== expected && tally.unexpected.length < 5) tally.unexpected.push(status)
      await sleep(30)
    }
  }
  const callers = [caller(), caller(), caller()]
  return {
    sent,
    requests: () => requests,
    stop: async () => {
      stopped = true
      await Promise.all(callers)
    },
  }
}

const scratch = mkdtempSync(join(tmpdir(), 'dashboard-test-'))
let service
let prometheus
let traffic
let browser
let page
try {
  const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8'))
  ensurePrometheus()
  ensureChromium()
  const [port, metricsPort, prometheusPort] = [await freePort(), await freePort(), await freePort()]
  const base = `http://127.0.0.1:${port}`
  const prometheusBase = `http://127.0.0.1:${prometheusPort}`

  mkdirSync(join(scratch, 'service'))
  service = startService(port, join(scratch, 'service'), {
    METRICS_PORT: String(metricsPort),
    METRICS_REQUEST_DURATION: 'true',
    // No load shedding: this shared machine may be busy. So the shedding panel can only show 0.
    OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '0',
    // The key set renewed every 10 s instead of every 10 min, so that the fetch panels have more than the
    // first fetch to show in a short run.
    JWKS_MAX_AGE_MS: '10000',
  })
  children.push(service.kill)
  const ready = await waitUntil(async () => (await fetch(`${base}/ready`).catch(() => undefined))?.status === 200, TIMEOUT_MS)
  if (!check(ready, 'the compiled service starts with the dev issuer and turns ready')) throw new Error('no service')

  prometheus = startPrometheus(prometheusPort, metricsPort, scratch)
  const up = await waitUntil(async () => (await query(prometheusBase, `up{job="${JOB}"}`).catch(() => undefined))?.data?.result?.[0]?.value?.[1] === '1', TIMEOUT_MS)
  if (!check(up, `Prometheus ${execFileSync(PROMETHEUS, ['--version'], { encoding: 'utf8' }).split('\n')[0].split(' ')[2]} scrapes the metrics listener every ${SCRAPE_INTERVAL} as job ${JOB}`)) throw new Error('no scrape')

  const started = Date.now()
  traffic = await startTraffic(base)
  console.log(`traffic for ${trafficSeconds} s ...`)
  await sleep(trafficSeconds * 1000)

  // The dashboard's job variable lists the jobs that have its metric.
  const jobs = await (await fetch(`${prometheusBase}/api/v1/label/job/values?${new URLSearchParams({ 'match[]': 'auth_token_cache_lookups_total' })}`)).json()
  check(jobs.data?.includes(JOB), `the job variable's query (label_values(auth_token_cache_lookups_total, job)) finds ${JOB}`, JSON.stringify(jobs.data))

  // Every query of every panel, as Grafana would send it. Each must return at least one number (not NaN):
  // a panel that shows nothing is a broken panel. Shedding is off here, but its counter is always exported
  // (0), so that panel too has a number: 0.
  for (const panel of dashboard.panels) {
    for (const target of panel.targets ?? []) {
      const what = `"${panel.title}" ${target.refId}`
      const expr = substitute(target.expr)
      if (!check(expr !== undefined, `${what}: uses only the $job and $__rate_interval variables`, target.expr)) continue
      const answer = await query(prometheusBase, expr)
      if (!check(answer.status === 'success', `${what}: parses`, answer.error)) continue
      const result = answer.data.result
      const numbers = result.filter(({ value }) => Number.isFinite(Number(value[1])))
      check(numbers.length > 0, `${what}: returns data`, `${summarize(result)}; ${expr}`)
    }
  }

  // Prometheus's own graph page with the key panels' queries, over the run so far (the traffic goes on).
  const graphs = GRAPHS.map(({ title, refId }) => {
    const panel = dashboard.panels.find((candidate) => title.test(candidate.title))
    return { title: panel?.title ?? String(title), expr: substitute(panel?.targets.find((target) => target.refId === refId)?.expr ?? '') }
  })
  const missing = graphs.filter(({ expr }) => !expr)
  check(missing.length === 0, 'the key panels for the screenshot are in the dashboard', missing.map(({ title }) => title).join(', '))
  const range = `${Math.ceil((Date.now() - started) / 1000) + 20}s`
  const params = new URLSearchParams()
  graphs.forEach(({ expr }, index) => {
    params.append(`g${index}.expr`, expr ?? '')
    params.append(`g${index}.tab`, '0')
    params.append(`g${index}.range_input`, range)
  })
  browser = await launchChromium(join(scratch, 'profile'))
  children.push(() => browser.process()?.kill('SIGKILL'))
  page = await browser.newPage()
  await page.setViewport({ width: 1280, height: 900 })
  const requested = await keepLocal(page)
  const problems = []
  page.on('pageerror', (error) => {
    // Debian's libjs-popper.js installs an ES module as popper.min.js, which the page loads as a classic
    // script: a SyntaxError of Debian's packaging that costs only bootstrap's tooltips, not the graphs.
    if (error.message !== 'Unexpected token \'export\'') problems.push(error.message)
  })
  // For the screenshot: the navigation bar scrolls with the page instead of standing over a graph, the
  // graphs are 240 px high instead of 400 (they take their height from this as they are drawn), no
  // expression field shows focus, and the controls that only edit the page (execute, insert a metric, remove
  // or add a graph, query history) are hidden. And the page writes its axis labels as raw floats, which can
  // come out as 0.0045000000000001, cut off at the left: they are rounded to 6 significant digits.
  const style = [
    '.navbar.fixed-top { position: absolute }', '.graph { min-height: 240px }',
    '.expression_input:focus { box-shadow: none !important; border-color: #ced4da !important; caret-color: transparent }',
    '.execute_btn, .expression_select, a[name=remove], #add_graph, .query-history { display: none !important }',
  ].join('\n')
  await page.evaluateOnNewDocument((css) => document.addEventListener('DOMContentLoaded', () => {
    document.head.append(Object.assign(document.createElement('style'), { textContent: css }))
    const graph = globalThis.Prometheus.Graph.prototype
    const format = graph.formatKMBT
    graph.formatKMBT = function (y) {
      return String(format.call(this, y)).replace(/^-?[\d.]+(e-?\d+)?/, (number) => String(Number(Number(number).toPrecision(6))))
    }
  }), style)
  await page.goto(`${prometheusBase}/classic/graph?${params}`, { waitUntil: 'networkidle0', timeout: TIMEOUT_MS })
  const drawn = await page.waitForFunction((count) => {
    const wrappers = [...document.querySelectorAll('.graph_wrapper')]
    return wrappers.length === count && wrappers.every((wrapper) => wrapper.querySelector('.graph svg path') && !wrapper.querySelector('.error')?.textContent)
  }, { timeout: TIMEOUT_MS }, graphs.length).then(() => true, () => false)
  const errors = await page.$$eval('.graph_wrapper .error', (elements) => elements.map((element) => element.textContent).filter(Boolean))
  check(drawn, `Prometheus's graph page draws the ${graphs.length} key panels' queries`, errors.join(' | '))
  // Each graph under the title of the dashboard panel it stands for, its whole expression in sight.
  await page.$$eval('.graph_wrapper', (wrappers, titles) => wrappers.forEach((wrapper, index) => {
    wrapper.before(Object.assign(document.createElement('h5'), { textContent: `${titles[index]} (dashboard panel)`, style: 'margin: 16px 0 0' }))
    const expression = wrapper.querySelector('textarea')
    expression.style.height = `${expression.scrollHeight + 2}px`
  }), graphs.map(({ title }) => title))
  await saveScreenshot(page, {
    name: 'dashboard', height: await page.evaluate(() => document.documentElement.scrollHeight),
    update: options['update-screenshot'], readme: README_SCREENSHOT, maxBytes: README_SCREENSHOT_MAX_BYTES,
  })
  const outside = requested.filter((url) => !isLocal(url))
  check(outside.length === 0, 'the graph page made no request beyond 127.0.0.1', outside.join(', '))
  check(problems.length === 0, 'the graph page logged no script error', problems.join(' | '))

  await traffic.stop()
  const seconds = (Date.now() - started) / 1000
  console.log(`traffic: ${traffic.requests()} requests in ${Math.round(seconds)} s (${Math.round(traffic.requests() / seconds)}/s)`)
  for (const [kind, { calls, unexpected }] of traffic.sent) {
    check(calls > 0 && unexpected.length === 0, `traffic: ${kind} answers as it should`, `${calls} sent${unexpected.length ? `; unexpected: ${unexpected.join(', ')}` : ''}`)
  }
} catch (error) {
  check(false, 'the dashboard test ran to the end', error.message)
  if (service) console.log(`service output:\n${service.output()}`)
  if (prometheus) console.log(`prometheus output:\n${prometheus.output()}`)
} finally {
  await traffic?.stop()
  await browser?.close()
  await service?.stop()
  await prometheus?.stop()
  rmSync(scratch, { recursive: true, force: true })
  report()
}
