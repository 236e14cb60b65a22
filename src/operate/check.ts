import type { Admin } from "kafkajs";
import type pg from "pg";
import type { Config } from "../config.js";
import type { Logger } from "../log.js";
import type { Checkpoint } from "../checkpoint/position.js";
import { formatLsn } from "../lsn.js";
import { withSourceClient } from "../source/connection.js";
import {
  capturedTables,
  detectAssetTables,
  checkRole,
  checkTables,
  checkWalLevel,
  ensurePublication,
  ensureReplicaIdentity,
} from "../source/preflight.js";
import { checkSnapshotPrivileges } from "../snapshot/privileges.js";
import { ident } from "../source/sql.js";
import { readStandbyFacts, standbyVerdict } from "../source/standby.js";
import { inRecovery } from "../source/standby-setup.js";
import { deliveryMode } from "../sink/delivery.js";
import { checkStateTopic, cleanupPolicy } from "../sink/topics.js";
import { peekCheckpoint, withKafka } from "./kafka-facts.js";
import { exitCode, finding, formatFindings, toJson, type Finding } from "./report.js";
import { failoverFindings } from "./failover-facts.js";
import { gapFinding, idleTimeoutFinding, readSlotReport, slotFinding, type SlotReport } from "./source-facts.js";

/**
 * `airflow-eventstream check`: the checks a start makes (src/source/preflight.ts, the slot, the gap
 * verdict, Kafka, the topics), run without streaming, creating or changing anything, each reported
 * as ok / warning / problem with what to do. The same functions as the start's, in "inspect" mode
 * where a start would create something. Exit 1 on any problem.
 */
export async function checkCommand(cfg: Config, log: Logger, opts: { json: boolean }): Promise<number> {
  const findings = await runChecks(cfg, log);
  process.stdout.write(opts.json ? `${toJson({ ok: exitCode(findings) === 0, checks: findings })}\n` : `${formatFindings(findings)}\n`);
  return exitCode(findings);
}

export async function runChecks(cfg: Config, log: Logger): Promise<Finding[]> {
  const findings: Finding[] = [{ check: "settings", verdict: "ok", detail: `loaded (slot "${cfg.slot}", delivery ${cfg.delivery})` }];
  findings.push(tlsFinding(cfg));
  const source = await sourceChecks(cfg, log);
  findings.push(...source.findings);
  let cp: Checkpoint | null | "unknown" = "unknown";
  const kafkaFindings: Finding[] = [];
  const kafka = await finding("Kafka", () =>
    withKafka(cfg, log, async (kafkaClient, admin) => {
      kafkaFindings.push(...(await topicFindings(cfg, admin)));
      kafkaFindings.push(
        await finding("checkpoint", async () => {
          const got = await peekCheckpoint(cfg, kafkaClient, admin);
          cp = got === "no topic" ? null : got;
          if (got === null || got === "no topic") return deliveryMode(cfg).ckpt === null ? "not in use" : "none yet for this slot";
          return `acked_lsn ${got.ackedLsn === null ? "unknown" : formatLsn(got.ackedLsn)}, written ${got.writtenAt ?? "at an unknown time"}`;
        }),
      );
      return `reachable at ${cfg.kafka.brokers.join(",")}`;
    }),
  );
  findings.push(kafka, ...kafkaFindings);
  if (source.slot !== null && cp !== "unknown") findings.push(gapFinding(cfg, cp, source.slot));
  else
    findings.push({ check: "gap verdict", verdict: "warning", detail: "not assessed: PostgreSQL or Kafka could not be read (see above)" });
  return findings;
}

/** Decoding from a standby (src/source/standby.ts): the same verdict a start acts on. */
async function standbyFinding(client: pg.Client): Promise<Finding> {
  const check = "standby";
  const f = await readStandbyFacts(client);
  if (!f.inRecovery) return { check, verdict: "ok", detail: "not in recovery: a primary" };
  const v = standbyVerdict(f);
  if (v.problem !== null) return { check, verdict: "problem", detail: v.problem };
  const what = `a standby (PostgreSQL ${Math.floor(f.serverVersionNum / 10000)}, hot_standby_feedback on, primary_slot_name "${f.primarySlotName ?? ""}"); snapshots and EVENTSTREAM_ON_GAP=snapshot need the primary`;
  return v.warnings.length > 0
    ? { check, verdict: "warning", detail: `${what}: ${v.warnings.join("; ")}` }
    : { check, verdict: "ok", detail: what };
}

function tlsFinding(cfg: Config): Finding {
  const pg = `PostgreSQL sslmode=${cfg.pg.sslmode}${cfg.pg.sslRootCert ? " with PGSSLROOTCERT" : ""}`;
  const kafka = cfg.kafka.ssl ? `Kafka TLS on${cfg.kafka.ssl.ca ? " with KAFKA_SSL_CA_FILE" : " (Node's CA list)"}` : "Kafka TLS off";
  return { check: "TLS", verdict: "ok", detail: `${pg}; ${kafka} (certificates are verified by the connections below)` };
}

async function sourceChecks(cfg: Config, log: Logger): Promise<{ findings: Finding[]; slot: SlotReport | null }> {
  const findings: Finding[] = [];
  let slot: SlotReport | null = null;
  const pg = await finding("PostgreSQL", () =>
    withSourceClient(cfg, async (client) => {
      findings.push(await finding("wal_level", async () => (await checkWalLevel(client), "logical")));
      findings.push(await standbyFinding(client));
      findings.push(await finding("REPLICATION privilege", async () => (await checkRole(client, cfg), `role "${cfg.pg.user}" may stream`)));
      findings.push(
        await finding(
          "snapshot privilege",
          async () => (await checkSnapshotPrivileges(client, cfg), "may execute pg_logical_emit_message"),
        ),
      );
      findings.push(await finding("tables", async () => `${(await checkTables(client, cfg)).join(", ")} present and readable`));
      const qualified = capturedTables(cfg, await detectAssetTables(client, cfg)).map((t) => `${ident(cfg.airflowSchema)}.${ident(t)}`);
      // On a standby a start creates nothing: what is missing is a problem, with the primary's SQL.
      const mode = (await inRecovery(client)) ? "standby" : "inspect";
      findings.push(
        await finding("publication", async () => {
          const todo = await ensurePublication(client, cfg, qualified, log, mode);
          return todo === null ? `"${cfg.publication}" publishes ${qualified.join(", ")}` : { warning: todo };
        }),
      );
      findings.push(
        await finding("replica identity", async () => {
          const todo = await ensureReplicaIdentity(client, cfg, log, mode);
          if (todo !== null) return { warning: todo };
          return cfg.replicaIdentity === "full"
            ? "task_instance and dag_run are REPLICA IDENTITY FULL"
            : "not checked (EVENTSTREAM_REPLICA_IDENTITY=default)";
        }),
      );
      const s = await readSlotReport(client, cfg).catch((e: unknown) => {
        findings.push({ check: "replication slot", verdict: "problem", detail: (e as Error).message });
        return null;
      });
      if (s !== null) findings.push(slotFinding(cfg, s));
      findings.push(await idleTimeoutFinding(client));
      slot = s;
      findings.push(
        ...(await failoverFindings(cfg, client).catch((e: unknown) => [
          { check: "failover", verdict: "problem" as const, detail: (e as Error).message },
        ])),
      );
      return `${client.host}:${client.port}, database "${cfg.pg.database}", role "${cfg.pg.user}"`;
    }),
  );
  return { findings: [pg, ...findings], slot };
}

/** The topics a start makes sure of: missing is a warning when the daemon may create them, a problem otherwise. */
async function topicFindings(cfg: Config, admin: Admin): Promise<Finding[]> {
  const existing = new Set(await admin.listTopics());
  const out: Finding[] = [];
  const missing = (topic: string, what: string): Finding =>
    cfg.createTopics
      ? { check: `topic ${topic}`, verdict: "warning", detail: `the ${what} does not exist: the first start creates it` }
      : {
          check: `topic ${topic}`,
          verdict: "problem",
          detail: `the ${what} does not exist and EVENTSTREAM_CREATE_TOPICS is false: create it (kafka-topics.sh --create --topic ${topic} --partitions ${cfg.topicPartitions}) or set EVENTSTREAM_CREATE_TOPICS=true`,
        };
  out.push(
    existing.has(cfg.topic)
      ? { check: `topic ${cfg.topic}`, verdict: "ok", detail: "the event topic exists" }
      : missing(cfg.topic, "event topic"),
  );
  const ckpt = deliveryMode(cfg).ckpt;
  if (ckpt !== null) {
    if (!existing.has(ckpt.topic)) out.push(missing(ckpt.topic, "checkpoint topic"));
    else {
      const policy = await cleanupPolicy(admin, ckpt.topic);
      out.push(
        policy.split(",").includes("compact")
          ? { check: `topic ${ckpt.topic}`, verdict: "ok", detail: "the checkpoint topic exists, compacted" }
          : {
              check: `topic ${ckpt.topic}`,
              verdict: "warning",
              detail: `the checkpoint topic has cleanup.policy=${policy}: checkpoints older than its retention are lost; set cleanup.policy=compact`,
            },
      );
    }
  }
  if (cfg.stateTopic !== null) {
    const topic = cfg.stateTopic;
    out.push(
      existing.has(topic)
        ? await finding(`topic ${topic}`, async () => (await checkStateTopic(admin, topic), "the current-state topic exists, compacted"))
        : missing(topic, "current-state topic"),
    );
  }
  return out;
}
