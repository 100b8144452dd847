import { Agent, EnvHttpProxyAgent, request, type Dispatcher } from 'undici'

/** What a failed fetch is logged as: a reason, never what the server sent. */
export class FetchError extends Error {
  override name = 'FetchError'

  /** The HTTP status of an answer that was not a success. */
  constructor (message: string, readonly status?: number) {
    super(message)
  }
}

export interface GetJsonOptions {
  dispatcher: Dispatcher
  signal: AbortSignal
  /** A larger body is refused without being held (a key set or a metadata document is a few KiB). */
  maxBytes: number
}

/**
 * GETs `url` and parses its JSON body. A redirect, an error status, a body over `maxBytes` or one that is
 * not JSON is a FetchError; network failures and the deadline throw as undici and the signal do.
 * Redirects are not followed: key material comes only from the URL that configuration or discovery named.
 */
export async function getJson (url: string, { dispatcher, signal, maxBytes }: GetJsonOptions): Promise<unknown> {
  const { statusCode, body } = await request(url, { method: 'GET', headers: { accept: 'application/json' }, dispatcher, signal })
  body.on('error', () => {}) // what is left unread is discarded below; its abort is no failure of ours
  let text: string
  try {
    if (statusCode < 200 || statusCode > 299) {
      throw new FetchError(`status ${statusCode}`, statusCode)
    }
    text = await readBody(body, maxBytes)
  } finally {
    body.destroy() // a body left unread would hold its connection
  }
  try {
    return JSON.parse(text)
  } catch {
    throw new FetchError('not JSON')
  }
}

async function readBody (body: AsyncIterable<Buffer>, limit: number): Promise<string> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of body) {
    size += chunk.byteLength
    if (size > limit) {
      throw new FetchError('document too large')
    }
    chunks.push(chunk)
  }
  return Buffer.concat(chunks).toString('utf8')
}

/** Why a fetch failed, for the log: ECONNREFUSED, UND_ERR_SOCKET, TimeoutError, status 502, not JSON ... */
export function describeFailure (error: unknown): string {
  const { name, message, code, cause } = error as Error & { code?: unknown, cause?: { code?: unknown } }
  if (error instanceof FetchError) {
    return message
  }
  return [cause?.code, code].find((value) => typeof value === 'string') as string | undefined ?? name
}

export interface ProxySettings {
  httpProxy: string | undefined
  httpsProxy: string | undefined
  noProxy: string | undefined
}

/**
 * The dispatcher for every outbound fetch: through the configured HTTP(S) proxy unless NO_PROXY exempts the
 * host, or direct. Settings come from configuration only (an empty string stops undici reading process.env).
 */
export function outboundDispatcher ({ httpProxy, httpsProxy, noProxy }: ProxySettings): Dispatcher {
  if (httpProxy === undefined && httpsProxy === undefined) {
    return new Agent()
  }
  return new EnvHttpProxyAgent({ httpProxy: httpProxy ?? '', httpsProxy: httpsProxy ?? '', noProxy: noProxy ?? '' })
}
