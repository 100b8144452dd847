import { hash } from 'node:crypto'

const LAST = Symbol('lastAuthorization')

interface LastHeader {
  header: string
  key: string
}

/** Anything a request arrives on (a socket): it remembers the last header it carried. */
export type Connection = object & { [LAST]?: LastHeader }

/**
 * The outcome cache's key for an Authorization header: its SHA-256, so that the cache holds no token. The
 * connection keeps its last header and that header's key: a client that sends the same token again on a
 * kept-alive connection costs a string comparison instead of a call into OpenSSL (measured in the README).
 * A header is held no longer than its connection stays open, and only the last one it carried.
 */
export function headerKey (connection: Connection, header: string): string {
  const last = connection[LAST]
  if (last !== undefined && last.header === header) {
    return last.key
  }
  const key = hash('sha256', header, 'base64')
  connection[LAST] = { header, key }
  return key
}
