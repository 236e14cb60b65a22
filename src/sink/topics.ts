import type { Admin, ConfigResourceTypes } from "kafkajs";
import type { Config } from "../config.js";
import { TopicError } from "../errors.js";
import type { Logger } from "../log.js";
import { authorizationFailure } from "./kafka-errors.js";

/** kafkajs's ConfigResourceTypes.TOPIC: the enum is not among the names Node's ESM loader finds in kafkajs's CommonJS exports. */
const TOPIC_RESOURCE = 2 as ConfigResourceTypes;

/**
 * The checkpoint topic takes one record per batch (hundreds a second under load), and a start
 * reads its tail (see checkpoint-topic.ts). Compaction never touches the active segment, so small
 * segments keep what a start reads small: at most a few segments of 16 MiB, not Kafka's default of
 * 1 GiB.
 */
const CHECKPOINT_TOPIC_CONFIG = [
  { name: "cleanup.policy", value: "compact" },
  { name: "segment.bytes", value: String(16 * 1024 * 1024) },
  { name: "segment.ms", value: String(60 * 60 * 1000) },
];

/**
 * The current-state topic (state-topic.ts): compacted, so it holds the latest record per key.
 * delete.retention.ms (Kafka's default, stated so docs/backfill.md can rely on it) is how long a
 * tombstone outlives compaction: a reader that takes longer than that to read the topic from its
 * beginning may miss a delete. segment.ms: compaction never touches the active segment, and
 * Kafka's 7-day default would leave a week of history for every bootstrapping reader to read.
 */
export const STATE_TOPIC_CONFIG = [
  { name: "cleanup.policy", value: "compact" },
  { name: "delete.retention.ms", value: String(24 * 60 * 60 * 1000) },
  { name: "segment.ms", value: String(60 * 60 * 1000) },
];

/**
 * Refuses a current-state topic that is not compacted: with delete (time) retention its old keys
 * vanish and a reader's state silently lacks rows. The check a `check` command can call too.
 */
export async function checkStateTopic(admin: Admin, topic: string): Promise<void> {
  const policy = await cleanupPolicy(admin, topic);
  if (!policy.split(",").includes("compact")) {
    throw new TopicError(
      `the current-state topic ${topic} exists with cleanup.policy=${policy || "(unset)"}, so its old entries expire and readers lose rows: make it compacted (kafka-configs.sh --bootstrap-server <broker> --alter --entity-type topics --entity-name ${topic} --add-config cleanup.policy=compact), or set EVENTSTREAM_STATE_TOPIC to another topic, or EVENTSTREAM_STATE_TOPIC_ENABLED=false`,
    );
  }
}

export async function cleanupPolicy(admin: Admin, topic: string): Promise<string> {
  const described = await admin.describeConfigs({
    resources: [{ type: TOPIC_RESOURCE, name: topic, configNames: ["cleanup.policy"] }],
    includeSynonyms: false,
  });
  return described.resources[0]?.configEntries.find((c) => c.configName === "cleanup.policy")?.configValue ?? "";
}

/**
 * The topics of a session: made sure of once each (created if missing and allowed), listed, and
 * their partitions read, through one admin client.
 */
export class TopicAdmin {
  private readonly knownTopics = new Set<string>();

  constructor(
    private readonly admin: Admin,
    private readonly cfg: Config,
    private readonly log: Logger,
  ) {}

  async list(): Promise<string[]> {
    return this.admin.listTopics();
  }

  /** Per topic, its partition ids, read now (a topic Kafka does not describe: none). */
  async partitions(topics: string[]): Promise<Map<string, number[]>> {
    const meta = await this.admin.fetchTopicMetadata({ topics });
    return new Map(
      topics.map((topic) => [topic, meta.topics.find((t) => t.name === topic)?.partitions.map((p) => p.partitionId) ?? []] as const),
    );
  }

  /** Per partition, the low and high offsets as the admin reports them (see checkpoint-topic.ts for what "high" is). */
  async offsets(topic: string): Promise<{ partition: number; low: string; high: string }[]> {
    return this.admin.fetchTopicOffsets(topic);
  }

  /** Makes sure of the topics not made sure of yet in this session. */
  async ensureKnown(topics: string[]): Promise<void> {
    const missing = topics.filter((t) => !this.knownTopics.has(t));
    if (missing.length > 0) await this.ensureTopics(missing);
  }

  async ensureTopics(topics: string[]): Promise<void> {
    const existing = new Set(await this.admin.listTopics());
    const missing = topics.filter((t) => !existing.has(t));
    if (missing.length > 0) {
      if (!this.cfg.createTopics) {
        throw new TopicError(
          `Kafka topic(s) ${missing.join(", ")} do not exist and EVENTSTREAM_CREATE_TOPICS is false: create them (e.g. kafka-topics.sh --create --topic ${missing[0]} --partitions ${this.cfg.topicPartitions}) or set EVENTSTREAM_CREATE_TOPICS=true`,
        );
      }
      await this.admin.createTopics({
        waitForLeaders: true,
        topics: missing.map((topic) => ({
          topic,
          numPartitions: this.cfg.topicPartitions,
          replicationFactor: this.cfg.topicReplicationFactor,
        })),
      });
      this.log.info({ topics: missing, partitions: this.cfg.topicPartitions }, "created Kafka topics");
    }
    for (const t of topics) this.knownTopics.add(t);
  }

  /**
   * The checkpoint topic: compacted (one record per slot is all that matters), one partition,
   * small segments (see CHECKPOINT_TOPIC_CONFIG).
   * An existing topic that is not compacted works, but its checkpoints expire with its retention;
   * a daemon started after that publishes the unacknowledged tail again, so say so.
   */
  async ensureCheckpointTopic(topic: string): Promise<void> {
    const existing = new Set(await this.admin.listTopics());
    if (!existing.has(topic)) await this.createCheckpointTopic(topic);
    else await this.warnIfNotCompacted(topic);
    this.knownTopics.add(topic);
  }

  /** The current-state topic: created with STATE_TOPIC_CONFIG when missing, refused when it exists uncompacted (checkStateTopic). */
  async ensureStateTopic(topic: string): Promise<void> {
    if (!(await this.admin.listTopics()).includes(topic)) {
      if (!this.cfg.createTopics) {
        throw new TopicError(
          `the current-state topic ${topic} does not exist and EVENTSTREAM_CREATE_TOPICS is false: create it (e.g. kafka-topics.sh --create --topic ${topic} --partitions ${this.cfg.topicPartitions} ${STATE_TOPIC_CONFIG.map((c) => `--config ${c.name}=${c.value}`).join(" ")}), set EVENTSTREAM_CREATE_TOPICS=true, or EVENTSTREAM_STATE_TOPIC_ENABLED=false`,
        );
      }
      try {
        await this.admin.createTopics({
          waitForLeaders: true,
          topics: [
            {
              topic,
              numPartitions: this.cfg.topicPartitions,
              replicationFactor: this.cfg.topicReplicationFactor,
              configEntries: STATE_TOPIC_CONFIG,
            },
          ],
        });
        this.log.info({ topic, partitions: this.cfg.topicPartitions, cleanupPolicy: "compact" }, "created the current-state topic");
      } catch (e: unknown) {
        // Another daemon may have created it at the same moment; then it is checked below.
        if (!(await this.admin.listTopics()).includes(topic)) throw e;
      }
    }
    await checkStateTopic(this.admin, topic);
    this.knownTopics.add(topic);
  }

  private async createCheckpointTopic(topic: string): Promise<void> {
    const create = `kafka-topics.sh --create --topic ${topic} --partitions 1 ${CHECKPOINT_TOPIC_CONFIG.map((c) => `--config ${c.name}=${c.value}`).join(" ")}`;
    // At-least-once needs the topic only for gap detection, which can be switched off: say so.
    const orDisable =
      this.cfg.delivery === "exactly-once"
        ? ""
        : "; or set EVENTSTREAM_GAP_DETECTION=false to run at-least-once without it (a dropped or recreated replication slot then goes unnoticed: see docs/delivery.md)";
    if (!this.cfg.createTopics) {
      throw new TopicError(
        `the checkpoint topic ${topic} does not exist and EVENTSTREAM_CREATE_TOPICS is false: create it (e.g. ${create}) or set EVENTSTREAM_CREATE_TOPICS=true${orDisable}`,
      );
    }
    try {
      await this.admin.createTopics({
        waitForLeaders: true,
        topics: [{ topic, numPartitions: 1, replicationFactor: this.cfg.topicReplicationFactor, configEntries: CHECKPOINT_TOPIC_CONFIG }],
      });
    } catch (e: unknown) {
      // Another daemon (another slot) may have created it at the same moment.
      if (!(await this.admin.listTopics()).includes(topic)) {
        const denied = authorizationFailure(e);
        if (denied)
          throw new TopicError(
            `creating the checkpoint topic ${topic} was refused by Kafka (${denied}): create it (e.g. ${create}) and grant the daemon READ, WRITE and DESCRIBE on it${orDisable}`,
            { cause: e },
          );
        throw e;
      }
    }
    this.log.info({ topic, partitions: 1, cleanupPolicy: "compact" }, "created the checkpoint topic");
  }

  private async warnIfNotCompacted(topic: string): Promise<void> {
    const policy = await cleanupPolicy(this.admin, topic);
    if (!policy.split(",").includes("compact")) {
      this.log.warn(
        { topic, cleanupPolicy: policy },
        "the checkpoint topic is not compacted: a checkpoint older than its retention is lost, and the next start may then publish unacknowledged events again, and cannot tell a dropped or recreated slot; set cleanup.policy=compact",
      );
    }
  }
}
