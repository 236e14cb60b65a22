import { afterEach, describe, expect, it } from "vitest";
import { authenticate } from "../../src/sink/wire/sasl.js";
import { SaslAuthenticationError } from "../../src/errors.js";
import { tlsServices } from "../support/harness.js";
import { connectTls, type WireConnection } from "../support/kafka-wire.js";

/**
 * The native producer's SASL (src/sink/wire/sasl.ts) against the services' real SASL_SSL listener
 * (scripts/services.sh: TLS with the test CA, SCRAM-SHA-256 and SCRAM-SHA-512 enabled, user
 * eventstream with credentials for both), on a TLS connection of the test's own.
 */

const API_VERSIONS = 18;
const METADATA = 3;
const PRODUCE = 0;
const open: WireConnection[] = [];

afterEach(() => {
  for (const c of open.splice(0)) c.close();
});

async function connection(): Promise<WireConnection> {
  const tls = tlsServices(); // throws, saying how to start the services, when they are not configured
  const c = await connectTls(tls.kafkaSaslBrokers[0]!, tls.caFile);
  open.push(c);
  return c;
}

/** ApiVersions v2 (non-flexible): error code and the API keys the broker serves. */
async function apiVersions(c: WireConnection): Promise<{ errorCode: number; keys: number[] }> {
  const body = await c.request(API_VERSIONS, 2, Buffer.alloc(0));
  const count = body.readInt32BE(2);
  const keys = Array.from({ length: count }, (_, i) => body.readInt16BE(6 + i * 6));
  return { errorCode: body.readInt16BE(0), keys };
}

/**
 * Metadata v4 (non-flexible) for no topics: the ports of the brokers it lists. Unlike ApiVersions,
 * which a SASL listener answers before the login too, Metadata needs an authenticated connection.
 */
async function metadataPorts(c: WireConnection): Promise<number[]> {
  const request = Buffer.alloc(5);
  request.writeInt32BE(0, 0); // topics: an empty array (not null, which would list every topic)
  request.writeInt8(0, 4); // allow_auto_topic_creation
  const body = await c.request(METADATA, 4, request);
  let at = 4; // throttle_time_ms
  const ports: number[] = [];
  const brokers = body.readInt32BE(at);
  at += 4;
  for (let i = 0; i < brokers; i++) {
    at += 4; // node_id
    at += 2 + body.readInt16BE(at); // host
    ports.push(body.readInt32BE(at));
    at += 4;
    const rack = body.readInt16BE(at);
    at += 2 + Math.max(rack, 0);
  }
  return ports;
}

describe("SASL over the services' SASL_SSL listener", () => {
  it.each(["scram-sha-256", "scram-sha-512"] as const)(
    "%s: logs in, then ApiVersions succeeds on the same connection",
    async (mechanism) => {
      const tls = tlsServices();
      const c = await connection();
      await authenticate(c.request, { mechanism, username: tls.saslUsername, password: tls.saslPassword });
      const versions = await apiVersions(c);
      expect(versions.errorCode).toBe(0);
      expect(versions.keys).toContain(PRODUCE);
      const port = Number(tls.kafkaSaslBrokers[0]!.split(":").at(-1));
      expect(await metadataPorts(c)).toContain(port);
    },
  );

  it("without the login the listener does not answer Metadata (what the test above relies on)", async () => {
    const c = await connection();
    expect((await apiVersions(c)).errorCode).toBe(0);
    await expect(metadataPorts(c)).rejects.toThrow(/closed the connection/);
  });

  it("a wrong password: SaslAuthenticationError with the broker's answer, without the password", async () => {
    const tls = tlsServices();
    const wrong = `${tls.saslPassword}-wrong`;
    const c = await connection();
    const e = await authenticate(c.request, { mechanism: "scram-sha-512", username: tls.saslUsername, password: wrong }).catch(
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(SaslAuthenticationError);
    expect((e as Error).name).toBe("SaslAuthenticationError");
    expect((e as SaslAuthenticationError).errorCode).toBe(58);
    expect((e as Error).message).toContain(`SASL SCRAM-SHA-512 login of user "${tls.saslUsername}"`);
    expect((e as Error).message).toContain("SaslAuthenticate error 58 (SASL_AUTHENTICATION_FAILED)");
    expect((e as Error).message).not.toContain(tls.saslPassword);
  });

  it("a mechanism the listener does not enable (PLAIN): says which ones it does", async () => {
    const tls = tlsServices();
    const c = await connection();
    const e = await authenticate(c.request, { mechanism: "plain", username: tls.saslUsername, password: tls.saslPassword }).catch(
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(SaslAuthenticationError);
    expect((e as SaslAuthenticationError).errorCode).toBe(33);
    expect((e as Error).message).toContain("does not enable PLAIN");
    expect((e as Error).message).toMatch(/it enables: (SCRAM-SHA-256, SCRAM-SHA-512|SCRAM-SHA-512, SCRAM-SHA-256)$/);
  });
});
