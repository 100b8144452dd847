import { createServer } from 'node:http'
import { connect, type AddressInfo } from 'node:net'

export interface ForwardProxy {
  url: string
  /** The tunnels opened, as `CONNECT host:port`. */
  seen: string[]
  close: () => Promise<void>
}

/** A real forwarding HTTP proxy on 127.0.0.1, as corporate egress runs one, with CONNECT tunnels (what undici uses for every request). */
export async function startProxy (): Promise<ForwardProxy> {
  const seen: string[] = []
  const server = createServer((_request, response) => response.writeHead(405).end())
  server.on('connect', (request, socket, head) => {
    seen.push(`CONNECT ${request.url}`)
    const [host, port] = request.url!.split(':')
    const tunnel = connect(Number(port), host, () => {
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n')
      tunnel.write(head)
      tunnel.pipe(socket).pipe(tunnel)
    })
    tunnel.on('error', () => socket.destroy())
    socket.on('error', () => tunnel.destroy())
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: async () => {
      server.closeAllConnections()
      await new Promise((resolve) => server.close(resolve))
    },
  }
}
