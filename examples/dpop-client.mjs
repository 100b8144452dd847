// A DPoP client against the service's dev issuer (RFC 9449): it makes a key pair, gets a token bound to it
// from POST /dev/token, and calls /api/private with a fresh proof per request; then shows that a replayed
// proof and the token sent as a plain Bearer token are refused.
//
//   npm start                                   # in another terminal: builds, and runs the dev issuer
//   node examples/dpop-client.mjs [http://localhost:3000]
//
// The proofs are made by lib/dpop/client.ts (compiled to dist/ by `npm start`): a `dpop+jwt` signed with
// the client's key, naming the method (htm), the URL without query (htu), the time (iat), a unique id
// (jti) and, beside an access token, its hash (ath).
import { accessTokenHash, DpopKey } from '../dist/lib/dpop/client.js'

const base = (process.argv[2] ?? 'http://localhost:3000').replace(/\/$/, '')
const key = DpopKey.generate('ES256')
console.log(`key thumbprint (jkt): ${key.jkt}`)

const minted = await fetch(`${base}/dev/token`, {
  method: 'POST',
  headers: { dpop: key.proof({ htm: 'POST', htu: `${base}/dev/token` }) },
})
const { access_token: token, token_type: type } = await minted.json()
console.log(`POST /dev/token -> ${minted.status}, token_type ${type}`)

const url = `${base}/api/private`
const call = async (label, headers) => {
  const response = await fetch(url, { headers })
  const body = await response.json()
  console.log(`${label}: ${response.status} ${body.message}${body.code ? ` (${body.code})` : ''}`)
  return response.status
}
const proof = () => key.proof({ htm: 'GET', htu: url, ath: accessTokenHash(token) })

const statuses = []
for (let i = 1; i <= 3; i++) {
  statuses.push(await call(`GET /api/private, proof ${i}`, { authorization: `DPoP ${token}`, dpop: proof() }))
}
const used = proof()
statuses.push(await call('GET /api/private, a new proof', { authorization: `DPoP ${token}`, dpop: used }))
statuses.push(await call('GET /api/private, the same proof again', { authorization: `DPoP ${token}`, dpop: used }))
statuses.push(await call('GET /api/private, the token as Bearer', { authorization: `Bearer ${token}` }))

const expected = [200, 200, 200, 200, 401, 401]
const ok = statuses.every((status, i) => status === expected[i])
console.log(ok ? 'as expected: bound token accepted with fresh proofs only' : `unexpected statuses: ${statuses.join(' ')}`)
process.exitCode = ok ? 0 : 1
