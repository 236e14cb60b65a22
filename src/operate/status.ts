import type { Config } from "../config.js";
import type { Logger } from "../log.js";
import type { Checkpoint } from "../checkpoint/position.js";
import { formatLsn, formatPosition } from "../lsn.js";
import { invalidationWhy } from "../checkpoint/gap.js";
import { UserActionError } from "../errors.js";
import { withSourceClient } from "../source/connection.js";
import { deliveryMode } from "../sink/delivery.js";
import { sourceTopics } from "../backfill/window.js";
import { peekCheckpoint, withKafka } from "./kafka-facts.js";
import { exitCode, finding, formatFindings, toJson, type Finding } from "./report.js";
import { gapFinding, lagText, readSlotReport, type SlotReport } from "./source-facts.js";

/** A daemon endpoint that does not answer within this is reported as not reachable: status must not hang on it. */
const DAEMON_TIMEOUT_MS = 1_500;

export interface TopicStatus {
  topic: string;
  partitions: { partition: number; low: string; high: string }[];
}

export interface Status {
  slot: (SlotReport & { row: NonNullable<SlotReport["row"]> | null }) | null;
  checkpoint: { ackedLsn: string | null; position: string | null; writtenAt: string | null; ageSeconds: number | null } | null;
  topics: TopicStatus[];
  daemon: unknown;
  findings: Finding[];
}

/**
 * `airflow-eventstream status`: the slot, this slot's checkpoint (read without writing), the topics'
 * partitions and end offsets, and a running daemon's /status when it answers. Exit 1 when something
 * needs action, each such thing said with what to do.
 */
export async function statusCommand(cfg: Config, log: Logger, opts: { json: boolean }): Promise<number> {
  const status = await gatherStatus(cfg, log);
  if (opts.json) process.stdout.write(`${toJson({ ok: exitCode(status.findings) === 0, ...status })}\n`);
  else process.stdout.write(`${formatFindings(status.findings)}\n`);
  return exitCode(status.findings);
}

export async function gatherStatus(cfg: Config, log: Logger): Promise<Status> {
  const findings: Finding[] = [];
  let slot: SlotReport | null = null;
  findings.push(
    await finding("replication slot", () =>
      withSourceClient(cfg, async (client) => {
        slot = await readSlotReport(client, cfg);
        return describeSlot(cfg, slot);
      }),
    ),
  );
  let cp: Checkpoint | null | "no topic" | "unknown" = "unknown";
  const topics: TopicStatus[] = [];
  const kafka = await finding("Kafka", () =>
    withKafka(cfg, log, async (kafkaClient, admin) => {
      cp = await peekCheckpoint(cfg, kafkaClient, admin);
      const eventTopics = await sourceTopics(cfg, admin, null, []).catch(() => [] as string[]);
      const wanted = [
        ...new Set([
          cfg.topic,
          ...eventTopics,
          ...(deliveryMode(cfg).ckpt ? [cfg.checkpointTopic] : []),
          ...(cfg.stateTopic ? [cfg.stateTopic] : []),
        ]),
      ];
      const existing = new Set(await admin.listTopics());
      for (const topic of wanted) {
        if (!existing.has(topic)) {
          findings.push({
            check: `topic ${topic}`,
            verdict: "problem",
            detail: "does not exist: start the daemon (it creates it when EVENTSTREAM_CREATE_TOPICS=true) or create it",
          });
          continue;
        }
        const partitions = (await admin.fetchTopicOffsets(topic)).map((o) => ({ partition: o.partition, low: o.low, high: o.high }));
        topics.push({ topic, partitions });
        findings.push({
          check: `topic ${topic}`,
          verdict: "ok",
          detail: `${partitions.length} partition(s), end offsets ${partitions.map((p) => `${p.partition}:${p.high}`).join(" ")}`,
        });
      }
      return `reachable at ${cfg.kafka.brokers.join(",")}`;
    }),
  );
  findings.splice(1, 0, kafka);
  const checkpoint = checkpointStatus(cp);
  if (cp !== "unknown") findings.push(checkpointFinding(cfg, cp, checkpoint));
  if (slot !== null && cp !== "unknown") {
    const gap = gapFinding(cfg, cp === "no topic" ? null : cp, slot);
    if (gap.verdict !== "ok") findings.push(gap);
  }
  const daemon = await daemonStatus(cfg);
  findings.push(daemonFinding(cfg, daemon));
  return { slot, checkpoint, topics, daemon, findings };
}

function describeSlot(cfg: Config, s: SlotReport): string | { warning: string } {
  const row = s.row;
  if (row === null)
    throw new StatusProblem(
      `slot "${cfg.slot}" does not exist: no daemon has streamed from this database yet, or it was dropped. Start the daemon (airflow-eventstream run); if it had streamed before, run airflow-eventstream check for the gap verdict`,
    );
  if (row.wal_status === "lost")
    throw new StatusProblem(
      `slot "${cfg.slot}" was invalidated by PostgreSQL (wal_status lost: ${invalidationWhy(row.invalidation_reason, s)}): events were lost. Follow the gap verdict below (re-snapshot the consumers, airflow-eventstream reset-checkpoint, start again)`,
    );
  const where = `confirmed_flush_lsn ${row.confirmed_flush_lsn ?? "?"}, ${lagText(s)}, wal_status ${row.wal_status ?? "unknown"}`;
  if (row.active_pid === null)
    throw new StatusProblem(
      `slot "${cfg.slot}" is not in use (${where}): no daemon streams from it, and PostgreSQL keeps every WAL segment since for it. Start the daemon, or drop the slot if it is retired`,
    );
  if (row.wal_status === "unreserved")
    return {
      warning: `slot "${cfg.slot}" is active (backend ${row.active_pid}) but more than max_slot_wal_keep_size behind (${where}): PostgreSQL invalidates it at its next checkpoint unless the daemon catches up`,
    };
  return `slot "${cfg.slot}" active, streaming to backend ${row.active_pid} (${where})`;
}

/** A thing that needs action, said as the finding's detail (report.ts turns UserActionErrors into problems). */
class StatusProblem extends UserActionError {}

function checkpointStatus(cp: Checkpoint | null | "no topic" | "unknown"): Status["checkpoint"] {
  if (cp === null || cp === "no topic" || cp === "unknown") return null;
  const age = cp.writtenAt === null ? null : Math.round((Date.now() - Date.parse(cp.writtenAt)) / 1000);
  return {
    ackedLsn: cp.ackedLsn === null ? null : formatLsn(cp.ackedLsn),
    position: cp.position === null ? null : formatPosition(cp.position),
    writtenAt: cp.writtenAt,
    ageSeconds: age,
  };
}

function checkpointFinding(cfg: Config, cp: Checkpoint | null | "no topic", s: Status["checkpoint"]): Finding {
  const check = "checkpoint";
  if (deliveryMode(cfg).ckpt === null) return { check, verdict: "ok", detail: "not in use (EVENTSTREAM_GAP_DETECTION=false)" };
  if (cp === "no topic")
    return {
      check,
      verdict: "problem",
      detail: `the checkpoint topic ${cfg.checkpointTopic} does not exist: start the daemon (it creates it) or create it`,
    };
  if (s === null)
    return {
      check,
      verdict: "warning",
      detail: `none for slot "${cfg.slot}" in ${cfg.checkpointTopic} yet: written by the daemon once it streams`,
    };
  return {
    check,
    verdict: "ok",
    detail: `acked_lsn ${s.ackedLsn ?? "unknown"}, last event ${s.position ?? "none"}, written ${s.writtenAt ?? "?"}${s.ageSeconds === null ? "" : ` (${s.ageSeconds} s ago)`}`,
  };
}

/**
 * A daemon's own verdict: a stalled one (connected, not progressing) needs action; a standby and a
 * daemon still starting are said as they are.
 */
function daemonFinding(cfg: Config, daemon: unknown): Finding {
  const check = "daemon";
  const url = daemonUrl(cfg);
  if (daemon === null) return { check, verdict: "ok", detail: `no daemon endpoint at ${url}` };
  const d = daemon as { ready?: unknown; reason?: unknown; role?: unknown };
  const role = typeof d.role === "string" ? d.role : "unknown";
  const reason = typeof d.reason === "string" ? d.reason : "no reason given";
  if (d.ready === true) return { check, verdict: "ok", detail: `${url}: ${role}, ready` };
  if (role === "standby") return { check, verdict: "ok", detail: `${url}: standby, waiting for the slot` };
  if (role === "active")
    return {
      check,
      verdict: "problem",
      detail: `${url}: not ready: ${reason}. Look at the daemon's log for the line that names the cause (Kafka or PostgreSQL unreachable, a refused produce)`,
    };
  return { check, verdict: "warning", detail: `${url}: not ready: ${reason}` };
}

/** Where a daemon run with the same settings serves /status; a wildcard bind is reached on loopback. */
function daemonUrl(cfg: Config): string {
  const { host, port } = cfg.http;
  const reach = host === "0.0.0.0" || host === "::" || host === "" ? "127.0.0.1" : host;
  return `http://${reach.includes(":") ? `[${reach}]` : reach}:${port}/status`;
}

/** The running daemon's /status, or null when nothing answers (or the endpoint is off). */
async function daemonStatus(cfg: Config): Promise<unknown> {
  if (cfg.http.port === 0) return null;
  try {
    const res = await fetch(daemonUrl(cfg), { signal: AbortSignal.timeout(DAEMON_TIMEOUT_MS) });
    if (!res.ok) return null;
    return (await res.json()) as unknown;
  } catch {
    return null;
  }
}
