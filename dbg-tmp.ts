import { PlatformaticSinkProducer, platformaticOptions } from "./src/sink/producer.ts";
import { loadConfig } from "./src/config.ts";
const env = { ...process.env, PGDATABASE: "x", KAFKA_BROKERS: process.env.EVENTSTREAM_TEST_KAFKA_SASL_BROKERS!, KAFKA_SSL: "true", KAFKA_SSL_CA_FILE: process.env.EVENTSTREAM_TEST_CA_FILE!, KAFKA_SASL_MECHANISM: "scram-sha-256", KAFKA_SASL_USERNAME: process.env.EVENTSTREAM_TEST_KAFKA_SASL_USERNAME!, KAFKA_SASL_PASSWORD: process.env.EVENTSTREAM_TEST_KAFKA_SASL_PASSWORD! };
const cfg = loadConfig(env as any);
const p = new PlatformaticSinkProducer({ ...platformaticOptions(cfg), retries: 0 });
const t = Date.now();
try { await p.connect(); console.log("connected", Date.now() - t); await p.sendBatch({ topicMessages: [{ topic: "dbg-sasl", messages: [{ key: "a", value: "b" }] }] }); console.log("sent"); } catch (e) { console.log("ERR", Date.now() - t, e, (e as any).errors); }
const w = new PlatformaticSinkProducer({ ...platformaticOptions(cfg), retries: 0, sasl: { mechanism: "SCRAM-SHA-256", username: "eventstream", password: "wrong" } });
try { await w.connect(); console.log("wrong connected?!"); } catch (e) { console.log("wrong ERR", Date.now() - t, (e as Error).message); }
await p.disconnect(); await w.disconnect();
