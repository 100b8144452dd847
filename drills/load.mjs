// The drills' load generator, a process of its own (forked by harness.mjs with no test-runner hooks), so
// that its CPU is measured apart from the service's and a busy runner cannot hold it back.
//
// Open loop, as real clients are: request i is due at start + i / rate whatever became of the earlier ones,
// and its latency counts from when it was due, so time spent waiting for a free connection is counted
// too (no coordinated omission). A due request goes out on an idle keep-alive connection, or on a new one
// while fewer than `maxConnections` are open; otherwise it waits. A client gives up on a request
// `timeoutMs` after it was due: still waiting (`unsent`) or sent and unanswered (`timeouts`, its
// connection closed). Requests cycle through the prepared pool in order, each run going on where the last
// one stopped (a run's own `requests` start from their first); with `unique` (a 12-character
// mark), the mark in a request is replaced by a counter in base64url, so that every request sent differs
// (distinct junk tokens without end, at no memory); with `varyScheme`, each pass over the pool writes the
// scheme of `authorization: Bearer` in another case (`Bearer`, `bEarer`, ... 64 of them): the service
// remembers tokens by the whole header, so every pass is as new to it as fresh tokens would be.
//
// Messages (IPC), each answered with its `id`: { id, type: 'prepare', requests: string[] } → { id };
// { id, type: 'run', port, rate, durationMs, count?, connections?, maxConnections?, timeoutMs?, requests?, unique?,
// varyScheme? }
// → { id, ...result }.
// Runs may overlap (a control client beside a load); they share the prepared requests unless one brings its own.
import { connect } from 'node:net'
import { performance } from 'node:perf_hooks'

const HEAD_END = Buffer.from('\r\n\r\n')
const OVERALL_BUCKET_MS = 0.1 // latency histogram over the run: 0.1 ms steps up to 10 s
const OVERALL_BUCKETS = 100_000
const SECOND_BUCKETS = 2000 // per-second histograms: 1 ms steps up to 2 s
const TIMEOUT_SCAN_MS = 20
const SCHEME = Buffer.from('authorization: Bearer')

let prepared = []
/** Where the runs are in the prepared pool: the next run goes on from there, so a pass of it is never repeated early. */
let preparedCursor = { sent: 0 }

process.on('message', async (message) => {
  if (message.type === 'prepare') {
    prepared = message.requests.map((text) => Buffer.from(text, 'latin1'))
    preparedCursor = { sent: 0 }
    process.send({ id: message.id })
  } else if (message.type === 'run') {
    process.send({ id: message.id, ...await run(message) })
  }
})
process.on('disconnect', () => process.exit(0)) // the runner is gone: so is its load

function run ({ port, rate, durationMs, count = Infinity, connections = 16, maxConnections = 256, timeoutMs = 2000, requests, unique, varyScheme = false }) {
  const pool = requests === undefined ? prepared : requests.map((text) => Buffer.from(text, 'latin1'))
  const cursor = requests === undefined ? preparedCursor : { sent: 0 }
  const mark = unique === undefined ? undefined : Buffer.from(unique)
  let sent = 0
  const nextBytes = () => {
    const template = pool[cursor.sent % pool.length]
    const pass = Math.floor(cursor.sent++ / pool.length) % 64
    const markAt = mark === undefined ? -1 : template.indexOf(mark)
    const schemeAt = varyScheme && pass > 0 ? template.indexOf(SCHEME) + SCHEME.length - 'Bearer'.length : -1
    if (markAt === -1 && schemeAt < 0) return template
    const copy = Buffer.from(template)
    if (markAt !== -1) copy.write(Buffer.from(String(sent++).padStart(9, '0')).toString('base64url'), markAt, 'latin1')
    for (let letter = 0; schemeAt >= 0 && letter < 6; letter++) {
      if (pass & (1 << letter)) copy[schemeAt + letter] ^= 0x20 // flips the letter's case
    }
    return copy
  }
  const started = performance.now()
  const stats = new Stats(started)
  const due = [] // due times of the requests waiting for a connection, oldest first
  let dueHead = 0
  let issued = 0
  const idle = []
  const busy = new Set()
  let open = 0
  let connecting = 0
  let finished = false
  const total = Math.min(count, Math.ceil(durationMs * rate / 1000))

  return new Promise((resolve) => {
    function openConnection () {
      open++
      connecting++
      stats.peakConnections = Math.max(stats.peakConnections, open)
      const socket = connect({ port, host: '127.0.0.1', noDelay: true })
      const connection = { socket, dueAt: 0, chunks: null, connected: false }
      socket.on('connect', () => {
        connecting--
        connection.connected = true
        take(connection)
      })
      socket.on('data', (chunk) => receive(connection, chunk))
      socket.on('error', () => {}) // counted on close, once
      socket.on('close', () => {
        open--
        if (!connection.connected) {
          connecting--
          stats.connectFailures++ // refused, reset, or no local port free
        }
        if (busy.delete(connection)) {
          stats.lost('errors', performance.now()) // closed or reset with a request under way
        } else {
          const at = idle.indexOf(connection)
          if (at !== -1) idle.splice(at, 1)
        }
        if (!finished) dispatch()
      })
    }

    /** Gives a connection the oldest request still worth sending, or parks it. */
    function take (connection) {
      if (dueHead < due.length && !finished) {
        connection.dueAt = due[dueHead++]
        busy.add(connection)
        connection.socket.write(nextBytes())
      } else {
        idle.push(connection)
      }
    }

    function receive (connection, chunk) {
      const data = connection.chunks === null ? chunk : Buffer.concat([connection.chunks, chunk])
      const headEnd = data.indexOf(HEAD_END)
      if (headEnd === -1) {
        connection.chunks = data
        return
      }
      const head = data.latin1Slice(0, headEnd).toLowerCase()
      const length = Number(/\r\ncontent-length: *(\d+)/.exec(head)?.[1] ?? 0)
      const end = headEnd + 4 + length
      if (data.length < end) {
        connection.chunks = data
        return
      }
      connection.chunks = null
      if (!busy.delete(connection)) return // answered after the client gave up
      const status = Number(head.slice(9, 12))
      stats.answered(status, head, data.latin1Slice(headEnd + 4, end), connection.dueAt, performance.now())
      if (data.length > end || head.includes('\r\nconnection: close')) {
        connection.socket.destroy() // more than one answer, or the server ends the connection: a fresh one
      } else {
        take(connection)
      }
    }

    function dispatch () {
      while (dueHead < due.length && idle.length > 0) take(idle.pop())
      // a connection under way will take a waiting request when it connects
      for (let waiting = due.length - dueHead - connecting; waiting > 0 && open < maxConnections; waiting--) openConnection()
    }

    const tick = () => {
      const now = performance.now()
      const target = Math.min(total, Math.floor((now - started) * rate / 1000))
      for (; issued < target; issued++) due.push(started + issued * 1000 / rate)
      while (dueHead < due.length && now - due[dueHead] > timeoutMs) {
        dueHead++
        stats.lost('unsent', now)
      }
      if (dueHead > 4096) { // keep the queue short without shifting it on every request
        due.splice(0, dueHead)
        dueHead = 0
      }
      dispatch()
      if (issued >= total && dueHead === due.length && busy.size === 0) finish()
    }

    const scan = () => {
      const now = performance.now()
      for (const connection of busy) {
        if (now - connection.dueAt > timeoutMs) {
          busy.delete(connection)
          stats.lost('timeouts', now)
          connection.socket.destroy()
        }
      }
      if (now - started > durationMs + timeoutMs + 1000) finish() // nothing outlives its own timeout
    }

    const ticker = setInterval(tick, 1)
    const scanner = setInterval(scan, TIMEOUT_SCAN_MS)
    for (let i = 0; i < connections; i++) openConnection()

    function finish () {
      if (finished) return
      finished = true
      clearInterval(ticker)
      clearInterval(scanner)
      const now = performance.now()
      for (let i = dueHead; i < due.length; i++) stats.lost('unsent', now)
      for (const connection of busy) stats.lost('timeouts', now)
      for (const connection of [...busy, ...idle]) connection.socket.destroy()
      resolve({ ...stats.summary(), issued, elapsedMs: now - started })
    }
  })
}

/** What became of every request: overall, and second by second (by when it was answered or given up). */
class Stats {
  answeredCount = 0
  statuses = {}
  /** Non-2xx answers by `status code` (the contract's `code` from the JSON body). */
  codes = {}
  retryAfterMissing = 0
  unsent = 0
  timeouts = 0
  errors = 0
  peakConnections = 0
  connectFailures = 0
  latency = new Uint32Array(OVERALL_BUCKETS)
  seconds = []

  constructor (started) {
    this.started = started
  }

  second (now) {
    const index = Math.floor((now - this.started) / 1000)
    while (this.seconds.length <= index) this.seconds.push({ ok: 0, other: 0, lost: 0, latency: new Uint32Array(SECOND_BUCKETS) })
    return this.seconds[index]
  }

  answered (status, head, body, dueAt, now) {
    const latencyMs = now - dueAt
    this.answeredCount++
    this.statuses[status] = (this.statuses[status] ?? 0) + 1
    this.latency[Math.min(OVERALL_BUCKETS - 1, Math.floor(latencyMs / OVERALL_BUCKET_MS))]++
    const second = this.second(now)
    second.latency[Math.min(SECOND_BUCKETS - 1, Math.floor(latencyMs))]++
    if (status >= 200 && status < 300) {
      second.ok++
      return
    }
    second.other++
    let code = 'none'
    try {
      code = JSON.parse(body).code ?? 'none'
    } catch {}
    this.codes[`${status} ${code}`] = (this.codes[`${status} ${code}`] ?? 0) + 1
    if (status === 503 && !head.includes('\r\nretry-after: ')) this.retryAfterMissing++
  }

  lost (kind, now) {
    this[kind]++
    this.second(now).lost++
  }

  summary () {
    const { answeredCount, statuses, codes, retryAfterMissing, unsent, timeouts, errors, peakConnections, connectFailures } = this
    return {
      peakConnections,
      connectFailures,
      answered: answeredCount,
      statuses,
      codes,
      retryAfterMissing,
      unsent,
      timeouts,
      errors,
      p50: percentile(this.latency, answeredCount, 0.5, OVERALL_BUCKET_MS),
      p99: percentile(this.latency, answeredCount, 0.99, OVERALL_BUCKET_MS),
      max: percentile(this.latency, answeredCount, 1, OVERALL_BUCKET_MS),
      seconds: this.seconds.map(({ ok, other, lost, latency }) => ({ ok, other, lost, p99: percentile(latency, ok + other, 0.99, 1) })),
    }
  }
}

/** The latency under which `fraction` of `total` answers fell (the top of its bucket), in ms. */
function percentile (histogram, total, fraction, bucketMs) {
  if (total === 0) return 0
  const rank = Math.ceil(total * fraction)
  let seen = 0
  for (let bucket = 0; bucket < histogram.length; bucket++) {
    seen += histogram[bucket]
    if (seen >= rank) return (bucket + 1) * bucketMs
  }
  return histogram.length * bucketMs
}
