import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { loadConfig } from "../../src/config.js";
import { SETTINGS } from "../../src/config/settings.js";

/**
 * The deployment files under deploy/: the Helm chart rendered by a real Helm (scripts/helm.sh builds
 * it from its Go module, once; CI builds it before the tests), the alert rules checked and
 * unit-tested by promtool (Debian's `prometheus` package), and the Grafana dashboard's queries
 * checked by promtool too. Needs neither PostgreSQL nor Kafka.
 */
const repo = process.cwd();
const chart = join(repo, "deploy/helm/airflow-eventstream");
const scratch = mkdtempSync(join(tmpdir(), "helm-test-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** The daemon's own defaults: the chart must agree with them, so they are read, not restated. */
const defaultOf = (name: keyof typeof SETTINGS): unknown => SETTINGS[name].schema.parse(undefined);
const HTTP_PORT = defaultOf("EVENTSTREAM_HTTP_PORT");
const READY_STALL = defaultOf("EVENTSTREAM_READY_STALL_SECONDS");
const SHUTDOWN = defaultOf("EVENTSTREAM_SHUTDOWN_TIMEOUT_SECONDS");

/** Settings whose values are secret: the chart may only ever reference them. */
const SECRET_ENV = ["PGUSER", "PGPASSWORD", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"];

/**
 * The metrics the daemon's endpoint serves (the names agreed for issue 11's endpoint), and Node's
 * default process metrics and kube-state-metrics' one that the rules and dashboard use besides.
 */
const METRICS = new Set(
  [
    "slot_lag_bytes",
    "slot_retained_wal_bytes",
    "source_lag_seconds",
    "seconds_since_ack",
    "commit_to_ack_seconds",
    "events_published_total",
    "changes_decoded_total",
    "churn_dropped_total",
    "bytes_produced_total",
    "produce_requests_total",
    "produce_request_events",
    "kafka_errors_total",
    "oversized_events_total",
    "inflight_events",
    "inflight_bytes",
    "paused",
    "paused_seconds_total",
    "state_cache_size",
    "state_cache_hits_total",
    "state_cache_misses_total",
    "session_restarts_total",
    "checkpoint_age_seconds",
    "checkpoint_acked_lsn",
    "role",
    "build_info",
  ].map((m) => `airflow_eventstream_${m}`),
);
const OTHER_METRICS = new Set([
  "process_resident_memory_bytes",
  "nodejs_heap_size_used_bytes",
  "process_cpu_seconds_total",
  "kube_pod_container_status_last_terminated_exitcode",
]);

type Doc = { kind: string; metadata: { name: string; labels?: Record<string, string> }; spec: any }; // eslint-disable-line @typescript-eslint/no-explicit-any

let helm = "";
beforeAll(() => {
  // The first build on a machine takes minutes (scripts/helm.sh); afterwards it is a cache lookup.
  helm = execFileSync("bash", [join(repo, "scripts/helm.sh")], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }).trim();
}, 900_000);

function values(name: string, text: string): string {
  const file = join(scratch, name);
  writeFileSync(file, text);
  return file;
}

function run(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(helm, args, { encoding: "utf8", env: { ...process.env, HELM_CACHE_HOME: scratch, HELM_CONFIG_HOME: scratch } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function render(...valueFiles: string[]): Doc[] {
  const r = run(["template", "es", chart, "--namespace", "airflow", ...valueFiles.flatMap((f) => ["-f", f])]);
  expect(r.stderr).toBe("");
  expect(r.status).toBe(0);
  return parseAllDocuments(r.stdout)
    .map((d) => d.toJS() as Doc | null)
    .filter((d): d is Doc => d !== null);
}

const one = (docs: Doc[], kind: string): Doc => {
  const found = docs.filter((d) => d.kind === kind);
  expect(found.map((d) => d.kind)).toEqual([kind]);
  return found[0]!;
};

type EnvVar = { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } };
const container = (docs: Doc[]) => one(docs, "Deployment").spec.template.spec.containers[0];
const envOf = (docs: Doc[]): Map<string, EnvVar> => new Map((container(docs).env as EnvVar[]).map((e) => [e.name, e]));

const tlsValues = values(
  "tls.yaml",
  `postgres:
  host: pg.example.internal
  sslmode: verify-full
  existingSecret: pg-login
  tls: { caSecret: pg-ca, caKey: root.pem }
kafka:
  brokers: "b1:9093,b2:9093"
  ssl: true
  tls: { caSecret: kafka-ca }
  sasl: { mechanism: scram-sha-512, existingSecret: kafka-login }
heap: { maxOldSpaceSizeMb: 256 }
metrics:
  serviceMonitor: { enabled: true, labels: { release: kube-prometheus-stack } }
env:
  - name: EVENTSTREAM_DELIVERY
    value: exactly-once
envFrom:
  - secretRef: { name: more-settings }
`,
);

describe("Helm chart deploy/helm/airflow-eventstream", () => {
  it("passes helm lint, with the default values and with TLS, SASL and a ServiceMonitor", () => {
    for (const args of [[chart], [chart, "-f", tlsValues]]) {
      const r = run(["lint", "--strict", ...args]);
      expect(r.stdout + r.stderr).toContain("0 chart(s) failed");
      expect(r.status).toBe(0);
    }
  });

  it("renders two pods, probes on the daemon's default port, and the settings the chart owns as the daemon reads them", () => {
    const docs = render();
    expect(docs.map((d) => d.kind).sort()).toEqual(["Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"]);
    const deployment = one(docs, "Deployment");
    expect(deployment.spec.replicas).toBe(2);
    // A standby is never ready: a rolling update waiting for ready new pods would never end.
    expect(deployment.spec.strategy).toEqual({ type: "Recreate" });

    const c = container(docs);
    expect(c.ports).toEqual([{ name: "metrics", containerPort: HTTP_PORT, protocol: "TCP" }]);
    expect(c.livenessProbe.httpGet).toEqual({ path: "/healthz", port: "metrics" });
    expect(c.readinessProbe.httpGet).toEqual({ path: "/readyz", port: "metrics" });
    const env = envOf(docs);
    expect(env.get("EVENTSTREAM_HTTP_PORT")?.value).toBe(String(HTTP_PORT));
    expect(env.get("EVENTSTREAM_HTTP_HOST")?.value).toBe("0.0.0.0");
    expect(env.get("EVENTSTREAM_READY_STALL_SECONDS")?.value).toBe(String(READY_STALL));
    expect(env.get("EVENTSTREAM_SHUTDOWN_TIMEOUT_SECONDS")?.value).toBe(String(SHUTDOWN));
    // Every name the chart sets is a setting the daemon knows (it refuses unknown EVENTSTREAM_* names).
    for (const name of env.keys()) expect(Object.keys(SETTINGS), name).toContain(name);
    // Each value the chart writes is one the daemon's own schema accepts.
    for (const e of env.values())
      if (e.value !== undefined) expect(SETTINGS[e.name as keyof typeof SETTINGS].schema.safeParse(e.value).success, e.name).toBe(true);
    expect(env.has("NODE_OPTIONS")).toBe(false);

    // Kubernetes must not kill a pod still flushing Kafka on SIGTERM.
    expect(deployment.spec.template.spec.terminationGracePeriodSeconds).toBeGreaterThan(SHUTDOWN as number);
    expect(c.resources).toEqual({ requests: { cpu: "100m", memory: "256Mi" }, limits: { memory: "384Mi" } });

    const service = one(docs, "Service");
    expect(service.spec.ports).toEqual([{ name: "metrics", port: HTTP_PORT, targetPort: "metrics", protocol: "TCP" }]);
    expect(service.spec.publishNotReadyAddresses).toBe(true);
    expect(service.spec.selector).toEqual(deployment.spec.selector.matchLabels);
  });

  it("runs as non-root with a read-only root filesystem and a writable /tmp", () => {
    const docs = render();
    const pod = one(docs, "Deployment").spec.template.spec;
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 1000 });
    expect(pod.securityContext.runAsUser).toBeGreaterThan(0);
    expect(pod.automountServiceAccountToken).toBe(false);
    const c = container(docs);
    expect(c.securityContext).toMatchObject({
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ["ALL"] },
    });
    expect(c.volumeMounts).toContainEqual({ name: "tmp", mountPath: "/tmp" });
    expect(pod.volumes).toContainEqual({ name: "tmp", emptyDir: { sizeLimit: "64Mi" } });
  });

  it("has a PodDisruptionBudget over the pods that never blocks on the not-ready standby", () => {
    const docs = render();
    const pdb = one(docs, "PodDisruptionBudget");
    expect(pdb.spec.selector.matchLabels).toEqual(one(docs, "Deployment").spec.selector.matchLabels);
    expect(pdb.spec.maxUnavailable).toBe(1);
    expect(pdb.spec.unhealthyPodEvictionPolicy).toBe("AlwaysAllow");
  });

  it("references the Secrets named in the values and never renders a secret value", () => {
    const docs = render(tlsValues);
    expect(docs.some((d) => d.kind === "Secret")).toBe(false);
    const env = envOf(docs);
    for (const name of SECRET_ENV) {
      expect(env.get(name)?.value, name).toBeUndefined();
      expect(env.get(name)?.valueFrom?.secretKeyRef?.name, name).toBe(name.startsWith("PG") ? "pg-login" : "kafka-login");
    }
    expect(env.get("PGPASSWORD")?.valueFrom?.secretKeyRef?.key).toBe("password");
    expect(container(docs).envFrom).toEqual([{ secretRef: { name: "more-settings" } }]);
    expect(env.get("EVENTSTREAM_DELIVERY")?.value).toBe("exactly-once");
    expect(env.get("KAFKA_SASL_MECHANISM")?.value).toBe("scram-sha-512");
    expect(env.get("NODE_OPTIONS")?.value).toBe("--max-old-space-size=256");
  });

  it("mounts the TLS CA Secrets read-only where the settings point", () => {
    const docs = render(tlsValues);
    const pod = one(docs, "Deployment").spec.template.spec;
    const env = envOf(docs);
    const mounts = container(docs).volumeMounts as { name: string; mountPath: string; readOnly?: boolean }[];
    for (const [setting, secret, key] of [
      ["PGSSLROOTCERT", "pg-ca", "root.pem"],
      ["KAFKA_SSL_CA_FILE", "kafka-ca", "ca.crt"],
    ] as const) {
      const volume = (pod.volumes as { name: string; secret?: { secretName: string } }[]).find((v) => v.secret?.secretName === secret);
      expect(volume, secret).toBeDefined();
      const mount = mounts.find((m) => m.name === volume!.name);
      expect(mount?.readOnly).toBe(true);
      expect(env.get(setting)?.value).toBe(`${mount!.mountPath}/${key}`);
    }
    expect(env.get("KAFKA_SSL")?.value).toBe("true");
    expect(env.get("PGSSLMODE")?.value).toBe("verify-full");
  });

  it("renders a ServiceMonitor on the metrics Service's port when asked", () => {
    const docs = render(tlsValues);
    const monitor = one(docs, "ServiceMonitor");
    expect(monitor.metadata.labels?.release).toBe("kube-prometheus-stack");
    expect(monitor.spec.endpoints).toEqual([{ port: "metrics", path: "/metrics", interval: "30s", scrapeTimeout: "10s" }]);
    expect(monitor.spec.selector.matchLabels).toEqual(one(docs, "Service").spec.selector);
    expect(monitor.spec.namespaceSelector).toEqual({ matchNames: ["airflow"] });
  });

  it("renders an environment the daemon's own configuration loader accepts, Secrets and mounted CA files standing in", () => {
    // The loader checks that a CA file reads as PEM; TLS itself is the security tests' subject.
    const caFile = values("ca.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    for (const files of [[], [tlsValues]]) {
      const env: Record<string, string> = {};
      for (const e of envOf(render(...files)).values()) {
        if (e.name === "NODE_OPTIONS") continue; // read by the launcher, not a setting
        const value = e.valueFrom?.secretKeyRef ? `from-secret-${e.valueFrom.secretKeyRef.key}` : e.value!;
        env[e.name] = value.startsWith("/etc/airflow-eventstream/") ? caFile : value;
      }
      // The real loader, as at start: every problem (a value refused, a CA file without KAFKA_SSL) throws.
      expect(() => loadConfig(env, new Map()), files.join(" ") || "default values").not.toThrow();
    }
  });

  it("refuses values that cannot work, saying which key to set", () => {
    const cases: [string[], string][] = [
      [["--set", "postgres.existingSecret="], "postgres.existingSecret: name the Secret"],
      [["--set", "kafka.sasl.mechanism=plain"], "kafka.sasl.existingSecret: name the Secret"],
      // values.schema.json: the probes need the endpoint; libpq's modes; a misspelt key.
      [["--set", "http.port=0"], "at '/http/port': minimum: got 0, want 1"],
      [["--set", "postgres.sslmode=verify"], "at '/postgres/sslmode': value must be one of"],
      [["--set", "replica=3"], "additional properties 'replica' not allowed"],
    ];
    for (const [args, message] of cases) {
      const r = run(["template", "es", chart, ...args]);
      expect(r.status, args.join(" ")).not.toBe(0);
      expect(r.stderr).toContain(message);
    }
  });
});

describe("alert rules and dashboard", () => {
  const promtool = (...args: string[]) => {
    const r = spawnSync("promtool", args, { encoding: "utf8" });
    if (r.error) throw new Error(`promtool: ${r.error.message}; it comes with Debian's prometheus package: apt-get install -y prometheus`);
    return r;
  };

  it("alerts.yaml passes promtool check rules, and its unit tests pass (the lag and not-ready alerts fire)", () => {
    const check = promtool("check", "rules", join(repo, "deploy/prometheus/alerts.yaml"));
    expect(check.stdout + check.stderr).toContain("SUCCESS: 9 rules found");
    expect(check.status).toBe(0);
    const test = promtool("test", "rules", join(repo, "deploy/prometheus/alerts.test.yaml"));
    expect(test.stdout + test.stderr).toContain("SUCCESS");
    expect(test.status).toBe(0);
  });

  it("every dashboard query parses, and the dashboard and the alerts use only metrics the daemon serves", () => {
    const dashboard = JSON.parse(readFileSync(join(repo, "deploy/grafana/airflow-eventstream.json"), "utf8")) as {
      uid: string;
      panels: { type: string; targets?: { expr: string }[] }[];
    };
    expect(dashboard.uid).toBe("airflow-eventstream");
    const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
    expect(exprs.length).toBeGreaterThan(20);
    // promtool parses PromQL only inside rules: each query becomes a recording rule, with Grafana's
    // variables replaced by what they expand to.
    const rules = exprs.map((e, i) => ({
      record: `dashboard:q${i}`,
      expr: e.replaceAll("$__rate_interval", "5m").replaceAll("$instance", ".*"),
    }));
    const file = join(scratch, "dashboard-rules.json");
    writeFileSync(file, JSON.stringify({ groups: [{ name: "dashboard", rules }] }));
    const check = promtool("check", "rules", file);
    expect(check.stdout + check.stderr).toContain(`SUCCESS: ${rules.length} rules found`);

    const alerts = readFileSync(join(repo, "deploy/prometheus/alerts.yaml"), "utf8");
    const used = [
      ...`${exprs.join("\n")}\n${alerts}`.matchAll(/\b(airflow_eventstream_[a-z_]+|process_[a-z_]+|nodejs_[a-z_]+|kube_[a-z_]+)/g),
    ].map((m) => m[1]!.replace(/_(bucket|sum|count)$/, ""));
    const unknown = [...new Set(used)].filter((m) => !METRICS.has(m) && !OTHER_METRICS.has(m));
    expect(unknown).toEqual([]);
    // The dashboard shows every metric of the daemon's but the checkpoint's LSN (a position, not a series to plot).
    const shown = new Set(used);
    expect([...METRICS].filter((m) => !shown.has(m))).toEqual(["airflow_eventstream_checkpoint_acked_lsn"]);
  });
});
