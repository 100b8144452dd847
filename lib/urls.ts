import { isIP } from 'node:net'

/** A loopback host (as in a URL's hostname or HOST): traffic to it never leaves the machine. */
export function isLoopback (host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || (isIP(host) === 4 && host.startsWith('127.'))
}
