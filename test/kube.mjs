// The Kubernetes test (`npm run test:kube`): plays deploy/kubernetes/ with `podman kube play` against a local
// issuer, checks the pod comes up and becomes ready through the probes the manifests name, answers the routes
// with real tokens (200/401/403) under the manifests' security context and limits, then tears it down with
// `podman kube down`. Not part of `npm test`: it needs root, podman (../shared/tools/container-setup) and
// minutes. Prints `N passed, M failed`; exits 1 on any failure.
//
// podman is not a cluster: it plays Pods, Deployments (one pod per replica) and ConfigMaps, and skips every
// other kind. What podman 4.3 (Debian bookworm's) does with the rest of a pod spec is printed as `podman:` lines.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parse, parseAllDocuments, stringify } from 'yaml'
import { startDevIssuer } from '../dist/lib/dev-issuer.js'
import { buildImage, check, checkRoutes, freePort, get, podman, report, waitUntil } from './helpers/podman.mjs'

const IMAGE = 'localhost/api-authz:kube-test'
const AUDIENCE = 'https://api.kube.test'
const DIR = join(import.meta.dirname, '..', 'deploy', 'kubernetes')
const PROBES = ['startupProbe', 'livenessProbe', 'readinessProbe']

/** Every resource kustomization.yaml lists, in its order: what `kubectl apply -k` would send. */
function manifests () {
  const { resources } = parse(readFileSync(join(DIR, 'kustomization.yaml'), 'utf8'))
  return resources.flatMap((file) => parseAllDocuments(readFileSync(join(DIR, file), 'utf8')).map((document) => document.toJS()))
}

/**
 * The manifests with only what a local run must change. Every other kind stays in: podman skips it, and the
 * test checks that it does.
 */
function forLocalRun (resources, { issuer, port, metricsPort }) {
  for (const resource of resources) {
    if (resource.kind === 'ConfigMap') {
      const { AUTH0_DOMAIN, ...data } = resource.data
      resource.data = {
        ...data,
        AUTH0_ISSUER_URL: issuer,
        // In production the service takes an http issuer only on a loopback host, and refuses an http jwks_uri
        // found by discovery; a key set URL of its own skips discovery.
        AUTH0_JWKS_URL: `${issuer}.well-known/jwks.json`,
        AUTH0_AUDIENCE: AUDIENCE,
        // The pod shares the host's network (see the play below): free ports instead of 3000 and 9464.
        PORT: String(port),
        METRICS_PORT: String(metricsPort),
      }
    }
    if (resource.kind === 'Deployment') {
      // podman makes one pod per replica, all on the host's network: they would all want the same port.
      resource.spec.replicas = 1
      const [container] = resource.spec.template.spec.containers
      container.image = IMAGE
      container.imagePullPolicy = 'Never'
      // podman 4.3 publishes every containerPort on the host's port of the same number (Kubernetes does not)
      // and refuses port mappings on the host's network; the probes name the port, so they get its number.
      const named = new Set(container.ports.map((containerPort) => containerPort.name))
      delete container.ports
      for (const probe of PROBES) {
        if (named.has(container[probe]?.httpGet?.port)) container[probe].httpGet.port = port
      }
    }
  }
  return resources
}

/** A Kubernetes quantity as a number: `256Mi` bytes, `1` or `500m` CPUs. */
function quantity (value) {
  const [, number, unit = ''] = /^([\d.]+)(m|Ki|Mi|Gi)?$/.exec(String(value))
  return Number(number) * { '': 1, m: 1e-3, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3 }[unit]
}

const issuer = await startDevIssuer(AUDIENCE)
const port = await freePort()
const metricsPort = await freePort()
const resources = forLocalRun(manifests(), { issuer: issuer.issuer, port, metricsPort })
const deployment = resources.find((resource) => resource.kind === 'Deployment')
const [container] = deployment.spec.template.spec.containers
const work = mkdtempSync(join(tmpdir(), 'api-authz-kube-'))
const rendered = join(work, 'api-authz.yaml')
writeFileSync(rendered, resources.map((resource) => stringify(resource)).join('---\n'))

let playing
let down
let cleaning
let interrupted = false
/** `podman kube down` of what was played, once play is over, whoever asks first: the test, the finally, or Ctrl-C. */
function tearDown () {
  down ??= playing ? playing.then(() => podman('kube', 'down', rendered)) : Promise.resolve(undefined)
  return down
}
function cleanUp () {
  cleaning ??= tearDown().then(async () => {
    rmSync(work, { recursive: true, force: true })
    await issuer.close()
  })
  return cleaning
}
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, async () => {
    interrupted = true
    check(false, 'the kube test ran to the end', `${signal}: torn down`)
    await cleanUp()
    report()
    process.exit(1)
  })
}

try {
  console.log((await podman('--version')).stdout)
  await buildImage(IMAGE)

  // kube play puts pods on a bridge network of its own, not containers.conf's host network; the issuer
  // listens on 127.0.0.1 (http only on loopback in production), so the pod shares the host's network.
  // --replace: a pod left over by an interrupted run does not block this one.
  playing = podman('--log-level=info', 'kube', 'play', '--network', 'host', '--replace', rendered)
  const play = await playing
  if (!check(play.code === 0, 'podman kube play starts the Deployment with its ConfigMap', play.code === 0 ? '' : play.stderr.slice(-2000))) throw new Error('not played')
  const skipped = [...play.stderr.matchAll(/Kube kind (\w+) not supported/g)].map(([, kind]) => kind).sort()
  const unplayable = resources.map((resource) => resource.kind).filter((kind) => kind !== 'Deployment' && kind !== 'ConfigMap').sort()
  check(skipped.join() === unplayable.join(), 'podman skips the kinds it cannot play', skipped.join(', '))

  const [podId, containerId] = ['Pod', 'Container'].map((label) => new RegExp(`^${label}:\\n(\\w+)$`, 'm').exec(play.stdout)?.[1])
  // podman 4.3 answers `pod inspect` with one object, later versions with an array.
  const pod = [JSON.parse((await podman('pod', 'inspect', podId)).stdout)].flat()[0]
  const [inspect] = JSON.parse((await podman('inspect', containerId)).stdout)
  check(pod?.State === 'Running' && inspect.State.Running && pod.Containers.length === 2,
    'one pod (replicas: 1) with the service\'s container running beside podman\'s infra container', `${pod?.Name}: ${pod?.State}, ${inspect.Name}`)

  // podman runs none of the probes the way a kubelet does (below): the test asks them itself, in the order
  // a kubelet would, and waits for each as long as the manifests allow the startup probe.
  const startup = container.startupProbe
  const patience = startup.periodSeconds * startup.failureThreshold * 1000
  const started = Date.now()
  for (const probe of PROBES) {
    const { path } = container[probe].httpGet
    const passed = await waitUntil(async () => (await get(port, path)).status === 200, patience)
    check(passed, `the ${probe} (${path}) passes`, `after ${((Date.now() - started) / 1000).toFixed(1)} s`)
  }
  const healthcheck = inspect.Config.Healthcheck
  console.log(`podman: livenessProbe -> healthcheck "${healthcheck?.Test?.slice(1).join(' ')}" every ${healthcheck?.Interval / 1e9} s, on failure: ${inspect.Config.HealthcheckOnFailureAction};` +
    ` ${(await podman('exec', containerId, 'sh', '-c', 'command -v curl || echo "the image has no curl"')).stdout}`)
  console.log(`podman: readinessProbe ${JSON.stringify(inspect).includes(container.readinessProbe.httpGet.path) ? 'used' : 'not used'},` +
    ` startupProbe ${inspect.Config.StartupHealthCheck ? 'used' : 'not used'}`)

  const plain = issuer.mint({}).access_token
  const scoped = issuer.mint({ scope: 'read:messages' }).access_token
  await checkRoutes(port, plain, scoped)
  check((await get(metricsPort, '/metrics')).status === 200, 'metrics answer on the metrics port the annotations name', `METRICS_PORT ${metricsPort}`)

  const { securityContext } = deployment.spec.template.spec
  const ids = await podman('exec', containerId, 'sh', '-c', 'echo $(id -u):$(id -g)')
  check(ids.stdout === `${securityContext.runAsUser}:${securityContext.runAsGroup}`, 'the process runs as the runAsUser and runAsGroup, not root', ids.stdout)
  const write = await podman('exec', containerId, 'touch', '/app/written')
  check(write.code !== 0 && /Read-only file system/.test(write.stderr), 'the root filesystem is read-only, and the service runs on it', write.stderr)
  const status = (await podman('exec', containerId, 'cat', '/proc/1/status')).stdout
  check(/^CapEff:\s+0+$/m.test(status) && /^NoNewPrivs:\s+1$/m.test(status), 'PID 1 has no capabilities and cannot gain privileges',
    status.split('\n').filter((line) => /^(CapEff|NoNewPrivs)/.test(line)).join(', ').replaceAll('\t', ' '))
  const { limits } = container.resources
  check(inspect.HostConfig.Memory === quantity(limits.memory) && inspect.HostConfig.NanoCpus === quantity(limits.cpu) * 1e9,
    'the container has the CPU and memory limits', `${inspect.HostConfig.NanoCpus / 1e9} CPU, ${inspect.HostConfig.Memory / 1024 ** 2} MiB`)
  console.log(`podman: stop timeout ${inspect.Config.StopTimeout} s (terminationGracePeriodSeconds: ${deployment.spec.template.spec.terminationGracePeriodSeconds}),` +
    ` preStop ${JSON.stringify(inspect).includes('"sleep"') ? 'kept' : 'dropped'}`)

  const downStarted = Date.now()
  const { code, stderr } = await tearDown()
  const downSeconds = (Date.now() - downStarted) / 1000
  const left = await Promise.all([['pod', podId], ['container', pod.InfraContainerID], ['container', containerId]].map(async ([what, id]) =>
    (await podman(what, 'exists', id)).code === 0))
  const after = await get(port, '/health')
  check(code === 0 && !left.includes(true) && after.error?.code === 'ECONNREFUSED', 'podman kube down removes the pod and its containers; nothing answers on the port',
    `${downSeconds.toFixed(1)} s${stderr ? `; ${stderr}` : ''}`)
} catch (error) {
  check(false, 'the kube test ran to the end', error.message)
} finally {
  await cleanUp()
  if (!interrupted) report()
}
