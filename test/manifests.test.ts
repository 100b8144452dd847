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
  metadata: { name: string, labels?: Record<string, string> }
  data?: Record<string, string>
  spec: {
    selector?: { matchLabels?: Record<string, string> } & Record<string, string>
    scaleTargetRef?: { kind: string, name: string }
    ports?: { targetPort: string | number }[]
    replicas?: number
    template?: { metadata: { labels: Record<string, string>, annotations?: Record<string, string> }, spec: { terminationGracePeriodSeconds: number, securityContext: { runAsNonRoot: boolean }, containers: Container[] } }
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

t.test('kustomization lists every manifest but the ServiceMonitor (its CRD comes with the Prometheus Operator)', async (t) => {
  const listed = (parseAllDocuments(readFileSync(join(DIR, 'kustomization.yaml'), 'utf8'))[0]!.toJS() as { resources: string[] }).resources
  t.same(listed.sort(), readdirSync(DIR).filter((file) => file !== 'kustomization.yaml' && file !== 'servicemonitor.yaml').sort())
  t.same(manifests.map((manifest) => manifest.kind).sort(), ['ConfigMap', 'Deployment', 'HorizontalPodAutoscaler', 'PodDisruptionBudget', 'Service', 'ServiceMonitor'])
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

t.test('metrics: every metric the dashboard and the scrape settings use is in a live scrape, on the port they name', async (t) => {
  const issuer = await startIssuer(t)
  const app = await buildApp(t, issuer, { METRICS_REQUEST_DURATION: 'true' })
  const scrape = await (await fetch(app.metrics.url!)).text()
  const served = new Set([...scrape.matchAll(/^# TYPE (\S+) (\S+)$/gm)].flatMap(([, name, type]) =>
    type === 'histogram' ? [`${name}_bucket`, `${name}_count`, `${name}_sum`] : [name!]))

  const dashboard = JSON.parse(readFileSync(join(ROOT, 'deploy', 'grafana', 'dashboard.json'), 'utf8')) as { panels: { title: string, targets: { expr: string }[] }[] }
  const used = new Set(dashboard.panels.flatMap((panel) => panel.targets.flatMap((target) => [...target.expr.matchAll(/([a-z_:][a-z0-9_:]*)\{/g)].map(([, name]) => name!))))
  t.ok(used.size >= 12, `${used.size} metrics in the dashboard`)
  for (const name of used) {
    t.ok(served.has(name), `${name} is served`)
  }

  const annotations = pod.metadata.annotations!
  const config = loadConfig({ ...imageEnvironment(), ...configMap.data })
  t.equal(annotations['prometheus.io/scrape'], 'true')
  t.equal(Number(annotations['prometheus.io/port']), config.metricsPort, 'the annotation names the port metrics listen on')
  t.equal(new URL(app.metrics.url!).pathname, annotations['prometheus.io/path'])
  t.equal(container!.ports.find((port) => port.name === 'metrics')?.containerPort, config.metricsPort)
  const monitor = only('ServiceMonitor') as unknown as { spec: { selector: { matchLabels: Record<string, string> }, endpoints: { port: string, path: string }[] } }
  const service = only('Service')
  t.match(service.metadata as { labels: Record<string, string> }, { labels: monitor.spec.selector.matchLabels }, 'the ServiceMonitor selects the Service')
  t.ok(monitor.spec.endpoints.every(({ port, path }) => service.spec.ports!.some((p) => (p as { name?: string }).name === port) && path === annotations['prometheus.io/path']), 'on its metrics port and path')
})

t.test('the pod is locked down and sized', async (t) => {
  t.equal(pod.spec.securityContext.runAsNonRoot, true)
  t.equal(container!.securityContext.readOnlyRootFilesystem, true)
  t.equal(container!.securityContext.allowPrivilegeEscalation, false)
  t.ok(container!.resources.requests.cpu && container!.resources.requests.memory, 'requests (the autoscaler needs the CPU request)')
  t.ok(container!.resources.limits.cpu && container!.resources.limits.memory, 'limits')
})
