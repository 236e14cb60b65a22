import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { createDatabase, daemonEnv, dropDatabase, pgClient, spawnDaemon, uniqueName, type DaemonProcess } from "../support/harness.js";
import { insertDagRun, insertTi, updateTi } from "../support/airflow-rows.js";
import { registerCleanup } from "../support/cleanup.js";
import { kafka } from "../support/load.js";
import { freePort } from "../support/scratch-postgres.js";
import { runCli } from "../support/cli.js";

/**
 * The metrics and health endpoint of the real daemon (a child process, as operators run it), against
 * the real PostgreSQL and Kafka, scraped by plain fetch and by a real Prometheus on loopback.
 */

const STALL_SECONDS = 5;

async function get(port: number, path: string): Promise<{ status: number; body: string }> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(2_000) });
    return { status: res.status, body: await res.text() };
  } catch (e: unknown) {
    return { status: 0, body: String(e) };
  }
}

/** Sum of a metric's samples whose labels include `labels` (every sample when none). */
function value(text: string, name: string, labels = ""): number | null {
  let sum: number | null = null;
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name} `) && !line.startsWith(`${name}{`)) continue;
    if (labels !== "" && !line.includes(labels)) continue;
    sum = (sum ?? 0) + Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | null>): Promise<{ value: T; ms: number }> {
  const start = Date.now();
  while (Date.now() - start < timeoutMs) {
    const v = await probe();
    if (v !== null) return { value: v, ms: Date.now() - start };
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

const readyz = (port: number) => get(port, "/readyz");

/** A small, steady Airflow load: one task instance through four states every ~50 ms, until stopped. */
function steadyLoad(db: string): { stop: () => Promise<number> } {
  let running = true;
  let n = 0;
  const done = (async () => {
    const c = pgClient(db);
    await c.connect();
    await insertDagRun(c, "2", "load", "r");
    while (running) {
      const key = { dag_id: "load", task_id: `t${n}`, run_id: "r" };
      await insertTi(c, "2", key);
      for (const state of ["scheduled", "queued", "running", "success"]) await updateTi(c, key, { state });
      n++;
      await new Promise((r) => setTimeout(r, 50));
    }
    await c.end();
  })();
  return {
    stop: async () => {
      running = false;
      await done;
      return n;
    },
  };
}

/**
 * The shipped alert rules (deploy/prometheus/alerts.yaml) with test-sized times and thresholds:
 * every `for:` 2 s, every range 30 s, the lag threshold 150 kB (the Kafka stop below raises the
 * lag past it within seconds, under steady load it stays far below) and "no acknowledgement for"
 * the readiness stall time. Each replacement must apply: a changed rule fails here, not silently.
 */
function testSizedRules(): string {
  let rules = readFileSync("deploy/prometheus/alerts.yaml", "utf8");
  const replace = (from: RegExp, to: string) => {
    expect(rules, `alerts.yaml no longer has ${String(from)}`).toMatch(from);
    rules = rules.replace(from, to);
  };
  replace(/for: \d+m/g, "for: 2s");
  replace(/\[\d+m\]/g, "[30s]");
  replace(/airflow_eventstream_slot_lag_bytes > 64 \* 1024 \* 1024/, "airflow_eventstream_slot_lag_bytes > 150000");
  replace(/airflow_eventstream_seconds_since_ack > 120/, `airflow_eventstream_seconds_since_ack > ${STALL_SECONDS}`);
  return rules;
}

interface Prometheus {
  query: (q: string) => Promise<number | null>;
  /** Names of the alerts firing now. */
  firing: () => Promise<string[]>;
  stop: () => Promise<void>;
}

function startPrometheus(target: number): Prometheus {
  const dir = mkdtempSync(join(tmpdir(), "es-prom-"));
  const config = join(dir, "prometheus.yml");
  writeFileSync(join(dir, "alerts.yaml"), testSizedRules());
  writeFileSync(
    config,
    `global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: ["alerts.yaml"]\nscrape_configs:\n  - job_name: eventstream\n    static_configs:\n      - targets: ["127.0.0.1:${target}"]\n`,
  );
  const port = freePort();
  const proc = port.then((p) =>
    spawn(
      "prometheus",
      [`--config.file=${config}`, `--storage.tsdb.path=${join(dir, "data")}`, `--web.listen-address=127.0.0.1:${p}`, "--log.level=warn"],
      { stdio: "ignore" },
    ),
  );
  const stop = async () => {
    const p = await proc;
    if (p.exitCode === null) {
      const exited = new Promise((resolve) => p.once("exit", resolve));
      p.kill("SIGKILL");
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const unregister = registerCleanup("process", "prometheus", stop);
  return {
    stop: async () => {
      await stop();
      unregister();
    },
    query: async (q) => {
      const url = `http://127.0.0.1:${await port}/api/v1/query?query=${encodeURIComponent(q)}`;
      try {
        const res = (await (await fetch(url, { signal: AbortSignal.timeout(2_000) })).json()) as {
          data?: { result?: { value: [number, string] }[] };
        };
        const r = res.data?.result?.[0];
        return r === undefined ? null : Number(r.value[1]);
      } catch {
        return null;
      }
    },
    firing: async () => {
      try {
        const res = (await (
          await fetch(`http://127.0.0.1:${await port}/api/v1/alerts`, { signal: AbortSignal.timeout(2_000) })
        ).json()) as {
          data?: { alerts?: { labels: { alertname: string }; state: string }[] };
        };
        return (res.data?.alerts ?? []).filter((a) => a.state === "firing").map((a) => a.labels.alertname);
      } catch {
        return [];
      }
    },
  };
}

describe("metrics and health endpoint", () => {
  const dbs: string[] = [];
  afterAll(async () => {
    for (const db of dbs) await dropDatabase(db);
  });

  it("moves under load, turns not ready with Kafka stopped, and ready again after", async () => {
    const db = uniqueName("metrics");
    dbs.push(db);
    await createDatabase(db, "2");
    const port = await freePort();
    const daemon = spawnDaemon(
      daemonEnv(db, {
        EVENTSTREAM_HTTP_PORT: String(port),
        EVENTSTREAM_HTTP_HOST: "127.0.0.1",
        EVENTSTREAM_READY_STALL_SECONDS: String(STALL_SECONDS),
      }),
    );
    const prom = startPrometheus(port);
    let kafkaStopped = false;
    const load = steadyLoad(db);
    try {
      await daemon.waitForLog(/"streaming"/);
      expect((await get(port, "/healthz")).status).toBe(200);
      await until("/readyz 200", 15_000, async () => ((await readyz(port)).status === 200 ? true : null));

      const moving = await until("published events, latency observations and a slot probe", 30_000, async () => {
        const m = (await get(port, "/metrics")).body;
        const published = value(m, "airflow_eventstream_events_published_total", 'type="task_instance"') ?? 0;
        const observed = value(m, "airflow_eventstream_commit_to_ack_seconds_count") ?? 0;
        const lag = value(m, "airflow_eventstream_slot_lag_bytes");
        return published >= 20 && observed >= 20 && lag !== null && !Number.isNaN(lag) ? m : null;
      });
      const m = moving.value;
      expect(value(m, "airflow_eventstream_changes_decoded_total")).toBeGreaterThanOrEqual(
        value(m, "airflow_eventstream_events_published_total")!,
      );
      expect(value(m, "airflow_eventstream_produce_requests_total")).toBeGreaterThan(0);
      expect(value(m, "airflow_eventstream_bytes_produced_total")).toBeGreaterThan(1000);
      expect(value(m, "airflow_eventstream_source_lag_seconds")).toBeLessThan(10);
      expect(value(m, "airflow_eventstream_seconds_since_ack")).toBeLessThan(5);
      expect(value(m, "airflow_eventstream_role", 'role="active"')).toBe(1);
      expect(value(m, "airflow_eventstream_checkpoint_acked_lsn")).toBeGreaterThan(0);
      // restart_lsn never passes confirmed_flush_lsn: the slot retains at least what it lags by.
      expect(value(m, "airflow_eventstream_slot_retained_wal_bytes")).toBeGreaterThanOrEqual(
        value(m, "airflow_eventstream_slot_lag_bytes")!,
      );
      expect(m).toMatch(
        /airflow_eventstream_build_info\{version="[^"]+",node="v24[^"]*",postgres="\d+[^"]*",airflow_schema="public",delivery="at-least-once"\} 1/,
      );
      expect(m).toMatch(/process_resident_memory_bytes \d+/);
      const status = JSON.parse((await get(port, "/status")).body) as Record<string, unknown>;
      expect(status).toMatchObject({ ready: true, role: "active", delivery: "at-least-once" });

      // A real Prometheus scrapes the same series (1 s interval).
      const scraped = await until("Prometheus to have scraped the published events", 30_000, async () => {
        const v = await prom.query('sum(airflow_eventstream_events_published_total{type="task_instance"})');
        return v !== null && v > 0 ? v : null;
      });
      const latency = await until("Prometheus to have commit -> ack observations", 10_000, async () => {
        const v = await prom.query("sum(airflow_eventstream_commit_to_ack_seconds_count)");
        return v !== null && v > 0 ? v : null;
      });
      console.log(`prometheus saw ${scraped.value} task_instance events published, ${latency.value} commit -> ack observations`);
      // The rules are loaded and, once Prometheus has scraped a few times (before its first scrape
      // nothing is "active", so AirflowEventstreamNotStreaming may fire), quiet while the daemon streams.
      await until("Prometheus to have loaded the rules and no alert to fire", 20_000, async () => {
        const rules = await prom.query('count(ALERTS{alertname=~"AirflowEventstream.*"}) or vector(0)');
        return rules !== null && (await prom.firing()).length === 0 ? true : null;
      });

      const lagBefore = value((await get(port, "/metrics")).body, "airflow_eventstream_slot_lag_bytes")!;
      await kafka("kafka-stop");
      kafkaStopped = true;
      const down = await until("/readyz 503 with Kafka stopped", (STALL_SECONDS + 10) * 1000, async () => {
        const r = await readyz(port);
        return r.status === 503 ? r.body.trim() : null;
      });
      console.log(`/readyz turned 503 ${down.ms} ms after Kafka stopped: ${down.value}`);
      expect(down.ms).toBeLessThan((STALL_SECONDS + 5) * 1000);
      const lagDuring = await until("the slot's lag to rise", 15_000, async () => {
        const v = value((await get(port, "/metrics")).body, "airflow_eventstream_slot_lag_bytes");
        return v !== null && v > lagBefore + 10_000 ? v : null;
      });
      console.log(`slot lag ${lagBefore} -> ${lagDuring.value} bytes with Kafka stopped`);
      const promLag = await until("Prometheus to see the lag rise", 15_000, async () => {
        const v = await prom.query("max_over_time(airflow_eventstream_slot_lag_bytes[1m])");
        return v !== null && v > lagBefore + 10_000 ? v : null;
      });
      expect(promLag.value).toBeGreaterThan(lagBefore);
      // The shipped rules (test-sized) see it: the lag alert and the not-ready alert fire.
      const fired = await until("the lag and not-ready alerts to fire", 60_000, async () => {
        const f = await prom.firing();
        return f.includes("AirflowEventstreamLagGrowing") && f.includes("AirflowEventstreamNotReady") ? f : null;
      });
      console.log(`alerts firing ${fired.ms} ms after the lag rose: ${fired.value.join(", ")}`);

      await kafka("kafka-start");
      kafkaStopped = false;
      const up = await until("/readyz 200 after Kafka returned", 90_000, async () => ((await readyz(port)).status === 200 ? true : null));
      console.log(`/readyz 200 again ${up.ms} ms after Kafka started`);
      const after = (await get(port, "/metrics")).body;
      console.log(`session restarts: ${value(after, "airflow_eventstream_session_restarts_total") ?? 0}`);
    } finally {
      await prom.stop();
      await load.stop();
      if (kafkaStopped) await kafka("kafka-start");
      daemon.proc.kill("SIGTERM");
      await daemon.exited;
    }
  }, 240_000);

  it("counts the time reading PostgreSQL was paused for backpressure, and stops counting once Kafka has caught up", async () => {
    const db = uniqueName("metrics_paused");
    dbs.push(db);
    await createDatabase(db, "2");
    const port = await freePort();
    // One event in flight at a time: every event pauses reading until Kafka acknowledges it.
    const daemon = spawnDaemon(
      daemonEnv(db, { EVENTSTREAM_HTTP_PORT: String(port), EVENTSTREAM_HTTP_HOST: "127.0.0.1", EVENTSTREAM_MAX_INFLIGHT_EVENTS: "1" }),
    );
    try {
      await daemon.waitForLog(/"streaming"/);
      const before = value((await get(port, "/metrics")).body, "airflow_eventstream_paused_seconds_total");
      expect(before).toBe(0);
      const c = pgClient(db);
      await c.connect();
      try {
        await insertDagRun(c, "2", "burst", "r");
        for (let i = 0; i < 40; i++) await insertTi(c, "2", { dag_id: "burst", task_id: `t${i}`, run_id: "r" });
      } finally {
        await c.end();
      }
      const drained = await until("the burst published and reading resumed", 30_000, async () => {
        const m = (await get(port, "/metrics")).body;
        const published = value(m, "airflow_eventstream_events_published_total", 'type="task_instance"') ?? 0;
        return published >= 40 && value(m, "airflow_eventstream_paused") === 0 ? m : null;
      });
      const paused = value(drained.value, "airflow_eventstream_paused_seconds_total")!;
      expect(paused).toBeGreaterThan(0);
      // Resumed: the counter holds still.
      await new Promise((r) => setTimeout(r, 500));
      expect(value((await get(port, "/metrics")).body, "airflow_eventstream_paused_seconds_total")).toBe(paused);
      const status = JSON.parse((await get(port, "/status")).body) as { paused: boolean; paused_seconds_total: number };
      expect(status.paused).toBe(false);
      expect(status.paused_seconds_total).toBeCloseTo(paused, 2);
    } finally {
      daemon.proc.kill("SIGTERM");
      await daemon.exited;
    }
  }, 120_000);

  it("refuses to start on a port in use, saying what to set", async () => {
    const db = uniqueName("metrics_port");
    dbs.push(db);
    await createDatabase(db, "2");
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const port = (taken.address() as { port: number }).port;
    try {
      const d = spawnDaemon(daemonEnv(db, { EVENTSTREAM_HTTP_PORT: String(port), EVENTSTREAM_HTTP_HOST: "127.0.0.1" }));
      expect(await d.exited).toBe(2);
      expect(d.output.join("\n")).toContain(
        `cannot listen on 127.0.0.1:${port} for metrics and health (EADDRINUSE): set EVENTSTREAM_HTTP_PORT to a free port (0 turns the endpoint off)`,
      );
    } finally {
      taken.close();
    }
  });

  it("a standby is not ready while the active one streams, and ready after a takeover", async () => {
    const db = uniqueName("metrics_sb");
    dbs.push(db);
    await createDatabase(db, "2");
    const extra = { EVENTSTREAM_HTTP_HOST: "127.0.0.1", EVENTSTREAM_READY_STALL_SECONDS: String(STALL_SECONDS) };
    const [pa, ps] = [await freePort(), await freePort()];
    const active = spawnDaemon(daemonEnv(db, { ...extra, EVENTSTREAM_HTTP_PORT: String(pa) }));
    let standby: DaemonProcess | null = null;
    try {
      await active.waitForLog(/"streaming"/);
      standby = spawnDaemon(daemonEnv(db, { ...extra, EVENTSTREAM_HTTP_PORT: String(ps) }));
      await standby.waitForLog(/waiting for it/);
      const r = await readyz(ps);
      expect(r).toEqual({ status: 503, body: "standby\n" });
      const sm = (await get(ps, "/metrics")).body;
      expect(value(sm, "airflow_eventstream_role", 'role="standby"')).toBe(1);
      expect(value(sm, "airflow_eventstream_role", 'role="active"')).toBe(0);
      await until("the active daemon ready", 15_000, async () => ((await readyz(pa)).status === 200 ? true : null));
      // `status` reads the daemon's /status at the port its settings name.
      const statusOf = (port: number) => runCli(["status"], daemonEnv(db, { ...extra, EVENTSTREAM_HTTP_PORT: String(port) }));
      const [sa, ss] = [await statusOf(pa), await statusOf(ps)];
      expect(sa.out).toContain(`daemon: http://127.0.0.1:${pa}/status: active, ready`);
      expect(ss.out).toContain(`daemon: http://127.0.0.1:${ps}/status: standby, waiting for the slot`);
      expect([sa.code, ss.code], sa.out + ss.out).toEqual([0, 0]);

      active.proc.kill("SIGKILL");
      const took = await until("the standby ready after the SIGKILL", 30_000, async () =>
        (await readyz(ps)).status === 200 ? true : null,
      );
      console.log(`standby ready ${took.ms} ms after the active daemon was SIGKILLed`);
      expect(value((await get(ps, "/metrics")).body, "airflow_eventstream_role", 'role="active"')).toBe(1);
    } finally {
      active.proc.kill("SIGKILL");
      standby?.proc.kill("SIGTERM");
      await standby?.exited;
    }
  }, 120_000);
});
