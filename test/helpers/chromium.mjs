// What the browser scripts share (`npm run test:browser`, `npm run test:dashboard`): Debian's Chromium,
// installed with apt-get when missing (no browser is ever downloaded), launched headless by puppeteer-core
// with a fresh profile, and kept on the loopback.
import { execFileSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import puppeteer from 'puppeteer-core'
import { check } from './podman.mjs'

export const CHROMIUM = '/usr/bin/chromium'

export function ensureChromium () {
  if (existsSync(CHROMIUM)) return
  console.log(`${CHROMIUM} is missing: installing Debian's chromium`)
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit' })
  execFileSync('apt-get', ['install', '-y', '-qq', 'chromium', 'fonts-dejavu-core'], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
}

/** Headless Chromium with its profile in `userDataDir` (an empty directory the caller removes). */
export function launchChromium (userDataDir) {
  return puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    userDataDir,
    args: [
      '--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run',
      // Belt and braces: whatever the browser itself wants to reach, no name but the loopback resolves.
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1',
    ],
  })
}

export function isLocal (url) {
  const { protocol, hostname } = new URL(url)
  return protocol === 'data:' || protocol === 'blob:' || protocol === 'about:' || ['127.0.0.1', 'localhost', '[::1]'].includes(hostname)
}

/**
 * Records every request `page` makes and lets through only those to the loopback (the others are aborted).
 * Returns the list of requested URLs, which keeps growing.
 */
export async function keepLocal (page) {
  const requested = []
  await page.setRequestInterception(true)
  page.on('request', (request) => {
    requested.push(request.url())
    if (!isLocal(request.url())) request.abort('blockedbyclient')
    else request.continue()
  })
  return requested
}

/**
 * Saves the top `height` pixels of `page` (1280 wide) as `<name>-<pid>.png` under the system's temporary
 * directory and prints its path; with `update`, also copies it to `readme` (the README's picture) if it is
 * under `maxBytes`, a check of its own.
 */
export async function saveScreenshot (page, { name, height, update, readme, maxBytes }) {
  const screenshot = join(tmpdir(), `${name}-${process.pid}.png`)
  await page.screenshot({ path: screenshot, clip: { x: 0, y: 0, width: 1280, height }, captureBeyondViewport: true })
  console.log(`screenshot: ${screenshot} (${Math.round(statSync(screenshot).size / 1024)} KB)`)
  if (update && check(statSync(screenshot).size < maxBytes, `the screenshot is under ${maxBytes / 1024} KB for the README`)) {
    mkdirSync(dirname(readme), { recursive: true })
    copyFileSync(screenshot, readme)
    console.log(`README screenshot: ${readme}`)
  }
  return screenshot
}
