import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { parseAllDocuments } from 'yaml'
import { CONFIG_VARIABLES, loadConfig } from '../lib/config.js'
import { buildApp, keysLoaded, startIssuer } from './helpers/app.js'

// The Kubernetes manifests name probe paths, ports and variables; this keeps them from drifting from the code.

const ROOT = join(import.meta.dirname, '..')
const DIR = join(ROOT, 'deploy', 'kubernetes')

interface Probe { httpGet: { path: string, port: string | number } }
interface Container {
  ports: { name: string, containerPort: number }[]
  env?: { name: string, value?: string }[]
  envFrom?: { configMapRef: { name: string } }[]
  readinessProbe: Probe
  livenessProbe: Probe
  startupProbe?: Probe
  lifecycle: { preStop: { exec: { command: string[] } } }
  resources: { requests: { cpu: string, memory: string }, limits: { cpu: string, memory: string } }
  securityContext: { allowPrivilegeEscalation: boolean, readOnlyRootFilesystem: boolean }
}
interface Manifest {
  kind: string
  metadata: { name: string }
  data?: Record<string, string>
  spec: {
    selector?: { matchLabels?: Record<string, string> } & Record<string, string>
    scaleTargetRef?: { kind: string, name: string }
    ports?: { targetPort: string | number }[]
    replicas?: number
    template?: { metadata: { labels: Record<string, string> }, spec: { terminationGracePeriodSeconds: number, securityContext: { runAsNonRoot: boolean }, containers: Container[] } }
  }
}

const manifests: Manifest[] = readdirSync(DIR).filter((file) => file !== 'kustomization.yaml').flatMap((file) =>
  parseAllDocuments(readFileSync(join(DIR, file), 'utf8')).map((document) => document.toJS() as Manifest))
const only = (kind: string): Manifest => {
  const found = manifests.filter((manifest) => manifest.kind === kind)
  if (found.length !== 1) throw new Error(`expected one ${kind}, found ${found.length}`)
  return found[0]!
}
const deployment = only('Deployment')
const pod = deployment.spec.template!
const [container] = pod.spec.containers
const configMap = only('ConfigMap')

/** The ENV instruction of the Dockerfile's runtime stage, as the container sees it before the ConfigMap. */
function imageEnvironment (): Record<string, string> {
  const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ')
  const runtimeStage = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '))
  const env = /\nENV (.+)/.exec(runtimeStage)![1]!
  return Object.fromEntries(env.trim().split(/\s+/).map((pair) => pair.split('=') as [string, string]))
}

t.test('kustomization lists every manifest', async (t) => {
  const listed = (parseAllDocuments(readFileSync(join(DIR, 'kustomization.yaml'), 'utf8'))[0]!.toJS() as { resources: string[] }).resources
  t.same(listed.sort(), readdirSync(DIR).filter((file) => file !== 'kustomization.yaml').sort())
  t.same(manifests.map((manifest) => manifest.kind).sort(), ['ConfigMap', 'Deployment', 'HorizontalPodAutoscaler', 'PodDisruptionBudget', 'Service'])
})

t.test('every variable the manifests set is one the service reads, with a value it accepts', async (t) => {
  const environment = {
    ...imageEnvironment(),
    ...configMap.data,
    ...Object.fromEntries((container!.env ?? []).map(({ name, value }) => [name, value ?? ''])),
  }
  for (const name of Object.keys(environment)) {
    t.ok(CONFIG_VARIABLES.includes(name), `${name} is a configuration variable`)
  }
  t.same(container!.envFrom, [{ configMapRef: { name: configMap.metadata.name } }], 'the container reads the ConfigMap')
  const config = loadConfig(environment)
  t.equal(config.production, true)
  t.equal(config.host, '0.0.0.0')
  t.equal(container!.ports.find((port) => port.name === 'http')?.containerPort, config.port, 'the container port is the port the service listens on')

  // The ConfigMap's commented examples, uncommented, load too: a team can switch them on as they are.
  const examples = Object.fromEntries([...readFileSync(join(DIR, 'configmap.yaml'), 'utf8').matchAll(/^ {2}# ([A-Z_0-9]+): "?([^"#\n]+?)"?(?: +#.*)?$/gm)].map(([, name, value]) => [name!, value!]))
  t.ok(Object.keys(examples).length >= 5, `${Object.keys(examples).length} commented examples`)
  for (const name of Object.keys(examples)) {
    t.ok(CONFIG_VARIABLES.includes(name), `${name} (commented) is a configuration variable`)
  }
  t.doesNotThrow(() => loadConfig({ ...environment, ...examples }), 'with the commented examples on, the configuration loads')

  const preStopSeconds = Number(container!.lifecycle.preStop.exec.command.at(-1))
  t.ok(preStopSeconds + config.shutdownTimeoutMs / 1000 < pod.spec.terminationGracePeriodSeconds,
    'preStop pause and shutdown timeout fit in the grace period')
})

t.test('probes ask routes that exist, on the service\'s port', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer)
  await keysLoaded(app) // the startup fetch of the signing keys
  const probes = { readiness: container!.readinessProbe, liveness: container!.livenessProbe, startup: container!.startupProbe }
  t.equal(probes.readiness.httpGet.path, '/ready', 'readiness asks whether the signing keys are loaded')
  t.equal(probes.liveness.httpGet.path, '/health')
  for (const [kind, probe] of Object.entries(probes)) {
    if (probe === undefined) continue
    t.equal((await app.inject(probe.httpGet.path)).statusCode, 200, `${kind} probe ${probe.httpGet.path}`)
    t.ok(container!.ports.some((port) => port.name === probe.httpGet.port || port.containerPort === probe.httpGet.port), `${kind} probe port`)
  }
})

t.test('Service, autoscaler and disruption budget point at the Deployment', async (t) => {
  const labels = pod.metadata.labels
  const service = only('Service')
  const { matchLabels, ...serviceSelector } = service.spec.selector!
  t.equal(matchLabels, undefined)
  t.match(labels, serviceSelector, 'the Service selects the pods')
  t.ok(service.spec.ports!.every((port) => container!.ports.some((p) => p.name === port.targetPort || p.containerPort === port.targetPort)), 'the Service targets the container port')
  t.match(labels, deployment.spec.selector!.matchLabels!)
  t.match(labels, only('PodDisruptionBudget').spec.selector!.matchLabels!, 'the budget covers the pods')
  t.same(only('HorizontalPodAutoscaler').spec.scaleTargetRef, { apiVersion: 'apps/v1', kind: 'Deployment', name: deployment.metadata.name })
  t.ok(deployment.spec.replicas! > 1, 'several replicas')
})

t.test('the pod is locked down and sized', async (t) => {
  t.equal(pod.spec.securityContext.runAsNonRoot, true)
  t.equal(container!.securityContext.readOnlyRootFilesystem, true)
  t.equal(container!.securityContext.allowPrivilegeEscalation, false)
  t.ok(container!.resources.requests.cpu && container!.resources.requests.memory, 'requests (the autoscaler needs the CPU request)')
  t.ok(container!.resources.limits.cpu && container!.resources.limits.memory, 'limits')
})
