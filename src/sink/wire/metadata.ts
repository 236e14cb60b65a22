import type { PartitionLeader } from "../partitioner.js";
import { API, beginFrame, endFrame, type BrokerConnection } from "./connection.js";
import { KafkaProtocolError } from "./errors.js";
import { Reader } from "./reader.js";
import { Writer } from "./writer.js";

/** What Metadata said: brokers by node id, and each asked topic's partitions (index = partition id) with their leaders. */
export interface ClusterView {
  brokers: Map<number, { host: string; port: number }>;
  topics: Map<string, PartitionLeader[]>;
}

/**
 * Metadata v4-v8 for `topics` (never all topics, never creating one). A topic error is thrown as a
 * KafkaProtocolError (UNKNOWN_TOPIC_OR_PARTITION and LEADER_NOT_AVAILABLE are retriable, an
 * authorization failure is not); a partition without a leader is kept with leader -1.
 */
export async function fetchMetadata(conn: BrokerConnection, clientId: string, topics: readonly string[]): Promise<ClusterView> {
  const version = conn.versions.Metadata;
  const w = new Writer(256);
  const start = beginFrame(w, API.Metadata, version, clientId);
  w.int32(topics.length);
  for (const t of topics) w.string(t);
  w.int8(0); // allow_auto_topic_creation: the daemon's topics are made at start (topics.ts), never here
  if (version >= 8) {
    w.int8(0); // include_cluster_authorized_operations
    w.int8(0); // include_topic_authorized_operations
  }
  endFrame(w, start);
  const r = new Reader(await conn.request(w.finish()));
  r.int32(); // throttle_time_ms
  const brokers = new Map<number, { host: string; port: number }>();
  for (const b of r.array((x) => ({ nodeId: x.int32(), host: x.string() ?? "", port: x.int32(), rack: x.string() }))) {
    brokers.set(b.nodeId, { host: b.host, port: b.port });
  }
  r.string(); // cluster_id
  r.int32(); // controller_id
  const view: ClusterView = { brokers, topics: new Map() };
  const topicErrors: KafkaProtocolError[] = [];
  r.array((x) => {
    const error = x.int16();
    const name = x.string() ?? "";
    x.int8(); // is_internal
    const partitions = x.array((p) => {
      p.int16(); // a partition's own error (e.g. LEADER_NOT_AVAILABLE) shows as leader -1 below
      const partitionId = p.int32();
      const leader = p.int32();
      if (version >= 7) p.int32(); // leader_epoch
      p.array((q) => q.int32()); // replica_nodes
      p.array((q) => q.int32()); // isr_nodes
      if (version >= 5) p.array((q) => q.int32()); // offline_replicas
      return { partitionId, leader };
    });
    if (version >= 8) x.int32(); // topic_authorized_operations
    if (error !== 0) topicErrors.push(new KafkaProtocolError(error, `Metadata for topic ${name}`));
    else {
      const byId: PartitionLeader[] = [];
      for (const p of partitions) byId[p.partitionId] = p;
      view.topics.set(name, byId);
    }
  });
  // Not retriable first: an authorization failure must not hide behind a retriable neighbour.
  const fatal = topicErrors.find((e) => !e.retriable);
  if (fatal ?? topicErrors[0]) throw fatal ?? topicErrors[0];
  return view;
}
