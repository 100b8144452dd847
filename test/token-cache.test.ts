import t from 'tap'
import { Client } from 'undici'
import { buildApp, bearer, keysLoaded, startIssuer } from './helpers/app.js'

// Verified tokens are remembered by the hash of the whole token; these try to make that remembering lie.
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
const now = (): number => Math.floor(Date.now() / 1000)
const b64 = (value: object): string => Buffer.from(JSON.stringify(value)).toString('base64url')
const decode = (part: string): Record<string, unknown> => JSON.parse(Buffer.from(part, 'base64url').toString()) as Record<string, unknown>

t.test('a remembered token stops working when it ends: at its exp, or once older than AUTH0_MAX_TOKEN_AGE', async (t) => {
  const issuer = await startIssuer(t)
  const cases: { env: Record<string, string>, claims: () => Record<string, number>, code: string, message: string }[] = [
    { env: {}, claims: () => ({ exp: now() + 2 }), code: 'token_expired', message: 'Token has expired' },
    { env: { AUTH0_MAX_TOKEN_AGE: '2' }, claims: () => ({ iat: now() }), code: 'invalid_claims', message: 'Token is older than this API accepts (iat)' },
  ]
  const remembered = []
  for (const { env, claims, code, message } of cases) {
    const app = await buildApp(t, issuer, { AUTH0_CLOCK_TOLERANCE: '0', ...env })
    const token = issuer.token(claims())
    for (let i = 0; i < 3; i++) {
      t.equal((await app.inject({ url: '/api/private', headers: bearer(token) })).statusCode, 200, 'remembered from the second use')
    }
    remembered.push({ app, token, code, message })
  }
  await sleep(3100)
  for (const { app, token, code, message } of remembered) {
    const ended = await app.inject({ url: '/api/private', headers: bearer(token) })
    t.equal(ended.statusCode, 401)
    t.same(ended.json(), { statusCode: 401, error: 'Unauthorized', code, message })
  }
})

t.test('a remembered token stops working when its key is withdrawn', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer, { JWKS_MAX_AGE_MS: '1000' })
  const token = issuer.token()
  for (let i = 0; i < 3; i++) {
    t.equal((await app.inject({ url: '/api/private', headers: bearer(token) })).statusCode, 200, 'remembered from the second use')
  }
  issuer.rotate({ replace: true })
  await sleep(1100)
  await app.inject({ url: '/api/private', headers: bearer(token) }) // the old key set is renewed in the background
  await sleep(100)
  const withdrawn = await app.inject({ url: '/api/private', headers: bearer(token) })
  t.equal(withdrawn.statusCode, 401)
  t.equal(withdrawn.json().code, 'invalid_token')
  t.equal((await app.inject({ url: '/api/private', headers: bearer(issuer.token()) })).statusCode, 200, 'the new key works')
})

t.test('a busy cache does not keep a withdrawn key alive: every request checks the key set\'s age', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer, { JWKS_MAX_AGE_MS: '1000' })
  await keysLoaded(app)
  await sleep(600) // the token is first seen late in the key set's life, so its entry outlives the set's age
  const token = issuer.token()
  for (let i = 0; i < 3; i++) {
    t.equal((await app.inject({ url: '/api/private', headers: bearer(token) })).statusCode, 200)
  }
  issuer.rotate({ replace: true })
  await sleep(500)
  await app.inject({ url: '/api/private', headers: bearer(token) }) // answered from the cache; the set is renewed meanwhile
  await sleep(100)
  t.equal((await app.inject({ url: '/api/private', headers: bearer(token) })).statusCode, 401, 'withdrawn within the set\'s age')
})

t.test('a rejection that can change is not remembered (nbf)', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer, { AUTH0_CLOCK_TOLERANCE: '0' })
  const token = issuer.token({ nbf: now() + 1 })
  for (let i = 0; i < 3; i++) {
    t.equal((await app.inject({ url: '/api/private', headers: bearer(token) })).statusCode, 401)
  }
  await sleep(2100)
  t.equal((await app.inject({ url: '/api/private', headers: bearer(token) })).statusCode, 200, 'valid once its time has come')
})

t.test('a remembered rejection stays a rejection; a remembered token still needs the route\'s scope', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer)
  const token = issuer.token({ scope: 'openid' })
  const forged = `${token.slice(0, -4)}AAAA`
  for (let i = 0; i < 3; i++) {
    const response = await app.inject({ url: '/api/private', headers: bearer(forged) })
    t.equal(response.statusCode, 401)
    t.match(response.headers['www-authenticate'], 'error="invalid_token"')
    t.equal((await app.inject({ url: '/api/private', headers: bearer(token) })).statusCode, 200)
    t.equal((await app.inject({ url: '/api/private-scoped', headers: bearer(token) })).statusCode, 403)
  }
})

t.test('remembered claims are shared, so nobody may change them', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer, {}, async (app) => {
    app.get('/api/tamper', { config: { auth: true } }, async (request) => {
      const frozen = Object.isFrozen(request.user) && Object.isFrozen(request.user.permissions)
      try {
        (request.user as Record<string, unknown>).sub = 'someone-else'
      } catch {}
      return { frozen, sub: request.user.sub }
    })
  })
  const token = issuer.token({ permissions: ['read:messages'] })
  for (let i = 0; i < 3; i++) {
    t.same((await app.inject({ url: '/api/tamper', headers: bearer(token) })).json(), { frozen: true, sub: 'user-1' })
  }
})

t.test('a token remembered by its raw header lets nothing but that exact header through, on any connection', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer)
  const url = await app.listen({ port: 0, host: '127.0.0.1' })
  const client = new Client(url)
  t.teardown(() => client.close())
  const get = async (path: string, token: string, scheme = 'Bearer'): Promise<{ status: number, code?: string }> => {
    const { statusCode, body } = await client.request({ method: 'GET', path, headers: { authorization: `${scheme} ${token}` } })
    return { status: statusCode, code: ((await body.json()) as { code?: string }).code }
  }
  const scoped = issuer.token({ scope: 'read:messages' })
  const [header, payload, signature] = scoped.split('.') as [string, string, string]
  const otherSignature = `${signature.slice(0, -2)}${signature.endsWith('AA') ? 'BB' : 'AA'}`
  for (let i = 0; i < 3; i++) {
    t.same(await get('/api/private-scoped', scoped), { status: 200, code: undefined }, 'remembered from the second use')
  }
  for (let i = 0; i < 3; i++) {
    t.same(await get('/api/private-scoped', `${header}.${payload}.${otherSignature}`), { status: 401, code: 'invalid_token' }, 'the signature changed, refused every time, remembered or not')
  }
  t.same(await get('/api/private-scoped', `${header}.${b64({ ...decode(payload), sub: 'someone-else' })}.${signature}`), { status: 401, code: 'invalid_token' }, 'the claims changed')
  t.same(await get('/api/private-scoped', scoped), { status: 200, code: undefined }, 'the token itself again')
  t.same(await get('/api/private-scoped', issuer.token()), { status: 403, code: 'insufficient_scope' }, 'another valid token is judged as itself')
  t.same(await get('/api/private-scoped', scoped, 'DPoP'), { status: 401, code: 'invalid_token' }, 'the same token under another scheme, unbound')
  t.same(await get('/api/private-scoped', `${scoped} `), { status: 200, code: undefined }, 'trailing space: HTTP strips it, the same header')
  t.same(await get('/api/private-scoped', scoped.replace(/^./, (c) => c === 'e' ? 'f' : 'e')), { status: 401, code: 'invalid_token' }, 'the first character changed')
  const other = new Client(url)
  t.teardown(() => other.close())
  const { statusCode } = await other.request({ method: 'GET', path: '/api/private-scoped', headers: bearer(scoped) })
  t.equal(statusCode, 200, 'and from another connection')
})

t.test('a token in constant use is refused from the first request after its exp', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer, { AUTH0_CLOCK_TOLERANCE: '0' })
  const client = new Client(await app.listen({ port: 0, host: '127.0.0.1' }))
  t.teardown(() => client.close())
  const exp = now() + 2
  const token = issuer.token({ exp })
  const accepted: number[] = []
  for (;;) {
    const sentAt = Date.now()
    const { statusCode, body } = await client.request({ method: 'GET', path: '/api/private', headers: bearer(token) })
    const { code } = (await body.json()) as { code?: string }
    if (statusCode !== 200) {
      t.same({ statusCode, code }, { statusCode: 401, code: 'token_expired' }, 'refused as expired')
      t.ok(Date.now() >= exp * 1000, 'and not before its exp')
      t.ok(sentAt < exp * 1000 + 200, 'at the first request after its exp (50 ms apart)')
      break
    }
    accepted.push(sentAt)
    await sleep(50)
  }
  t.ok(accepted.length >= 10, `used ${accepted.length} times while valid, from memory`)
  t.ok(accepted.every((sentAt) => sentAt < exp * 1000), 'no request sent after its exp was accepted')
})
