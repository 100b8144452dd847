// The browser test (`npm run test:browser`): the compiled service with the dev issuer, its docs page at /docs
// in Debian's headless Chromium (driven by puppeteer-core; no browser is ever downloaded), the way a newcomer
// uses it: the API routes are listed with what they need, a token from POST /dev/token goes into the
// bearer scheme's Authorize dialog, and "Try it out" on /api/private-scoped answers 200 in the page. Every
// request the page makes is recorded, and none may leave 127.0.0.1/localhost. Not part of `npm test`: it
// needs Chromium (installed here with apt-get when missing, as root) and takes a while.
// Prints `N passed, M failed`; exits 1 on any failure. `--update-screenshot` also writes
// docs/screenshots/docs-page.png (the README's), if it is under 200 KB.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ensureChromium, isLocal, keepLocal, launchChromium, saveScreenshot } from './helpers/chromium.mjs'
import { check, freePort, report, waitUntil } from './helpers/podman.mjs'
import { startService } from './helpers/service.mjs'

const ROOT = join(import.meta.dirname, '..')
const README_SCREENSHOT = join(ROOT, 'docs', 'screenshots', 'docs-page.png')
const README_SCREENSHOT_MAX_BYTES = 200 * 1024
const API_ROUTES = { '/api/public': 'No access token needed', '/api/private': 'Needs a valid access token', '/api/private-scoped': 'read:messages' }
const TIMEOUT_MS = 20_000

/** The opblock of a path, found by the path swagger-ui prints. */
function operation (path) {
  return `.opblock:has(.opblock-summary-path[data-path="${path}"])`
}

const port = await freePort()
const base = `http://127.0.0.1:${port}`
const scratch = mkdtempSync(join(tmpdir(), 'browser-test-'))
let service
let browser
let page
try {
  ensureChromium()
  mkdirSync(join(scratch, 'service'))
  // No load shedding: this shared machine may be busy, and this test is about the page, not about load.
  service = startService(port, join(scratch, 'service'), { METRICS_PORT: 'off', OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '0' })
  const ready = await waitUntil(async () => (await fetch(`${base}/ready`).catch(() => undefined))?.status === 200, TIMEOUT_MS)
  if (!check(ready, 'the compiled service starts with the dev issuer and turns ready')) throw new Error('no service')
  const minted = await fetch(`${base}/dev/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ scope: 'read:messages' }) })
  const { access_token: token } = await minted.json()
  if (!check(minted.status === 200 && typeof token === 'string', 'POST /dev/token mints a read:messages token', `status ${minted.status}`)) throw new Error('no token')

  browser = await launchChromium(join(scratch, 'profile'))
  page = await browser.newPage()
  await page.setViewport({ width: 1280, height: 900 })
  const requested = await keepLocal(page)
  const apiCalls = []
  const problems = []
  page.on('request', (request) => {
    if (new URL(request.url()).pathname === '/api/private-scoped') apiCalls.push(request.headers())
  })
  page.on('console', (message) => { if (message.type() === 'error') problems.push(message.text()) })
  page.on('pageerror', (error) => problems.push(error.message))

  const response = await page.goto(`${base}/docs`, { waitUntil: 'networkidle0', timeout: TIMEOUT_MS })
  check(response.status() === 200, 'GET /docs answers 200', `got ${response.status()}`)
  check(!/upgrade-insecure-requests/.test(response.headers()['content-security-policy'] ?? ''), 'its CSP does not upgrade requests on this plain-HTTP host')
  await page.waitForSelector('.opblock', { timeout: TIMEOUT_MS })

  for (const [path, needs] of Object.entries(API_ROUTES)) {
    const summary = await page.$eval(`${operation(path)} .opblock-summary-description`, (description) => description.textContent).catch(() => '')
    check(summary.includes(needs), `${path} is listed with what it needs ("${needs}")`, summary)
  }
  const lockedPaths = await page.$$eval('.opblock', (blocks) => blocks.filter((block) => block.querySelector('.authorization__btn')).map((block) => block.querySelector('.opblock-summary-path')?.getAttribute('data-path')))
  check(lockedPaths.includes('/api/private') && lockedPaths.includes('/api/private-scoped') && !lockedPaths.includes('/api/public'),
    'the protected routes, and only they, show a lock', lockedPaths.join(', '))

  // Authorize: the bearer scheme's dialog, with the pasted token.
  await page.click('.auth-wrapper .authorize')
  await page.waitForSelector('.modal-ux', { timeout: TIMEOUT_MS })
  await page.type('#auth-bearer-value', token)
  await page.click('.modal-ux .auth-container:has(#auth-bearer-value) button.authorize')
  await page.waitForFunction(() => [...document.querySelectorAll('.modal-ux .auth-container h6')].some((heading) => heading.textContent === 'Authorized'), { timeout: TIMEOUT_MS })
  await page.click('.modal-ux .close-modal')
  check(true, 'the bearer scheme is authorized with the dev token')

  // Try it out on /api/private-scoped.
  await page.click(`${operation('/api/private-scoped')} .opblock-summary-control`)
  await page.waitForSelector(`${operation('/api/private-scoped')} .try-out__btn`, { timeout: TIMEOUT_MS })
  await page.click(`${operation('/api/private-scoped')} .try-out__btn`)
  await page.click(`${operation('/api/private-scoped')} .execute`)
  const statusCell = `${operation('/api/private-scoped')} .live-responses-table tbody .response-col_status`
  await page.waitForSelector(statusCell, { timeout: TIMEOUT_MS })
  const status = (await page.$eval(statusCell, (cell) => cell.textContent)).trim()
  const body = await page.$eval(`${operation('/api/private-scoped')} .live-responses-table tbody .response-col_description`, (cell) => cell.textContent)
  check(status === '200' && body.includes('read:messages to see this'), '"Try it out" on /api/private-scoped shows 200 and the message', `status ${status}`)
  check(apiCalls.length === 1 && apiCalls[0].authorization === `Bearer ${token}`, 'the page sent the token as Authorization: Bearer', `${apiCalls.length} calls`)

  // The page from its top down to the answer on screen.
  const answerBottom = await page.$eval(`${operation('/api/private-scoped')} .live-responses-table tbody`, (answer) => answer.getBoundingClientRect().bottom + window.scrollY)
  await saveScreenshot(page, {
    name: 'docs-page', height: Math.ceil(answerBottom) + 16,
    update: process.argv.includes('--update-screenshot'), readme: README_SCREENSHOT, maxBytes: README_SCREENSHOT_MAX_BYTES,
  })

  const outside = requested.filter((url) => !isLocal(url))
  check(requested.length > 0 && outside.length === 0, 'no request left 127.0.0.1/localhost', `${requested.length} requests${outside.length ? `; outside: ${outside.join(', ')}` : ''}`)
  check(problems.length === 0, 'no script error or CSP violation in the page', problems.join(' | '))
} catch (error) {
  check(false, 'the browser test ran to the end', error.message)
  const failure = join(tmpdir(), `docs-page-failure-${process.pid}.png`)
  if (await page?.screenshot({ path: failure }).then(() => true, () => false)) console.log(`the page as it was: ${failure}`)
  if (service) console.log(`service output:\n${service.output()}`)
} finally {
  await browser?.close()
  await service?.stop()
  rmSync(scratch, { recursive: true, force: true })
  report()
}
