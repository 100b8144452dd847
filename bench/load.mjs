// The load generator of `npm run bench`, run as a process of its own so that its CPU is measured apart from
// the server's. It is built to cost less per request than the servers it measures (a generator that costs
// more flattens every ratio towards 1): every request is a Buffer made before the run, each connection
// cycles through its own slice of them from its own offset, reads go into one reused buffer (`onread`), and
// a response is parsed only as far as its status and length.
//
// Closed loop: a connection sends its next request when the previous response is complete. With `once`,
// each request is sent once (a DPoP proof cannot be replayed): a connection stops at the end of its slice.
// Messages (IPC): { type: 'prepare', requests: string[] } then { type: 'run', port, durationMs, connections, once }
// → { type: 'result', requests, statuses, errors, p50, p99, elapsedMs }.
import { connect } from 'node:net'
import { performance } from 'node:perf_hooks'

const HEADER_END = Buffer.from('\r\n\r\n')
const CONTENT_LENGTH = Buffer.from('\r\ncontent-length: ')
const LATENCY_BUCKET_MS = 0.01
const LATENCY_BUCKETS = 200_000 // up to 2 s; slower answers land in the last bucket

let pool = []

process.on('message', async (message) => {
  if (message.type === 'prepare') {
    pool = message.requests.map((text) => Buffer.from(text, 'latin1'))
    process.send({ type: 'prepared' })
  } else if (message.type === 'run') {
    process.send({ type: 'result', ...await run(message) })
  }
})

/** The requests of connection `index` of `count`: its own slice of the pool, or the pool from its own offset. */
function sliceFor (index, count) {
  if (pool.length >= count) {
    return pool.slice(Math.floor(index * pool.length / count), Math.floor((index + 1) * pool.length / count))
  }
  const offset = index % pool.length
  return [...pool.slice(offset), ...pool.slice(0, offset)]
}

function run ({ port, durationMs, connections, once = false }) {
  const stats = { requests: 0, statuses: {}, errors: 0, latency: new Uint32Array(LATENCY_BUCKETS) }
  const started = performance.now()
  const deadline = started + durationMs
  return new Promise((resolve) => {
    let open = connections
    const closed = () => {
      if (--open === 0) {
        resolve({ ...summarise(stats), elapsedMs: performance.now() - started })
      }
    }
    for (let i = 0; i < connections; i++) {
      openConnection(port, sliceFor(i, connections), { deadline, once }, stats, closed)
    }
  })
}

function openConnection (port, requests, { deadline, once }, stats, closed) {
  let next = 0
  let sentAt = 0
  let carry = null // the start of a response split across reads (rare on loopback)
  const readBuffer = Buffer.allocUnsafe(64 * 1024)

  const send = () => {
    sentAt = performance.now()
    if (sentAt >= deadline || (once && next === requests.length)) {
      socket.destroy()
      return
    }
    socket.write(requests[next])
    next = next + 1 === requests.length && !once ? 0 : next + 1
  }

  const complete = (status) => {
    const latency = performance.now() - sentAt
    stats.latency[Math.min(LATENCY_BUCKETS - 1, Math.floor(latency / LATENCY_BUCKET_MS))]++
    stats.statuses[status] = (stats.statuses[status] ?? 0) + 1
    stats.requests++
  }

  const onData = (length, buffer) => {
    let data = buffer
    if (carry !== null) {
      data = Buffer.concat([carry, buffer.subarray(0, length)])
      length = data.length
      carry = null
    }
    const size = responseSize(data, length)
    if (size === -1 || size > length) {
      carry = Buffer.from(data.subarray(0, length)) // the read buffer is reused: keep a copy
      return
    }
    complete(data.latin1Slice(9, 12))
    if (size < length) {
      stats.errors++ // bytes after the one response asked for: the server answered out of turn
      socket.destroy()
      return
    }
    send()
  }

  const socket = connect({ port, host: '127.0.0.1', noDelay: true, onread: { buffer: readBuffer, callback: onData } })
  socket.on('connect', send)
  socket.on('error', () => { stats.errors++ })
  socket.on('close', closed)
}

/**
 * The byte length of the response at the start of `data` (head and body), or -1 while its head is not among
 * its first `length` bytes. Servers under test send `content-length` in lower case, as Fastify does.
 */
function responseSize (data, length) {
  const headEnd = data.indexOf(HEADER_END)
  if (headEnd === -1 || headEnd + 4 > length) {
    return -1 // not in the bytes read so far (what lies beyond them is stale)
  }
  let at = data.indexOf(CONTENT_LENGTH)
  if (at === -1 || at > headEnd) {
    return headEnd + 4
  }
  let bodyLength = 0
  for (at += CONTENT_LENGTH.length; data[at] >= 0x30 && data[at] <= 0x39; at++) {
    bodyLength = bodyLength * 10 + data[at] - 0x30
  }
  return headEnd + 4 + bodyLength
}

function summarise ({ requests, statuses, errors, latency }) {
  const percentile = (fraction) => {
    const rank = Math.ceil(requests * fraction)
    let seen = 0
    for (let bucket = 0; bucket < latency.length; bucket++) {
      seen += latency[bucket]
      if (seen >= rank) return (bucket + 1) * LATENCY_BUCKET_MS
    }
    return Infinity
  }
  return { requests, statuses, errors, p50: percentile(0.5), p99: percentile(0.99) }
}
