import { describe, expect, it } from "vitest";
import type { ConnectionOptions } from "node:tls";
import type { Config } from "../../src/config.js";
import { causeChain, describeError, tlsFailure } from "../../src/errors.js";
import { pgClientConfig } from "../../src/source/connection.js";

const CA = { path: "/etc/ca.pem", pem: "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n" };

function pgSsl(sslmode: Config["pg"]["sslmode"], sslRootCert: Config["pg"]["sslRootCert"]): ConnectionOptions | boolean | undefined {
  const pg: Config["pg"] = { host: "db", port: 5432, user: "u", password: undefined, database: "airflow", sslmode, sslRootCert };
  return pgClientConfig(pg, { replication: false, applicationName: "t" }).ssl as ConnectionOptions | boolean | undefined;
}

describe("PostgreSQL TLS options (libpq's sslmode)", () => {
  it("disable: no TLS", () => {
    expect(pgSsl("disable", null)).toBe(false);
  });

  it("require: encrypted, certificate unchecked; with a root certificate, checked as verify-ca (as libpq)", () => {
    expect(pgSsl("require", null)).toEqual({ rejectUnauthorized: false });
    const withCa = pgSsl("require", CA) as ConnectionOptions;
    expect(withCa).toMatchObject({ rejectUnauthorized: true, ca: CA.pem });
    expect(withCa.checkServerIdentity?.("elsewhere", {} as never)).toBeUndefined();
  });

  it("verify-ca: the chain against the CA, no host name check", () => {
    const o = pgSsl("verify-ca", CA) as ConnectionOptions;
    expect(o).toMatchObject({ rejectUnauthorized: true, ca: CA.pem });
    expect(typeof o.checkServerIdentity).toBe("function");
    expect(o.checkServerIdentity?.("elsewhere", {} as never)).toBeUndefined();
  });

  it("verify-full: the chain and Node's own host name check (not overridden); without a root certificate Node's CAs", () => {
    expect(pgSsl("verify-full", CA)).toEqual({ rejectUnauthorized: true, ca: CA.pem });
    expect(pgSsl("verify-full", null)).toEqual({ rejectUnauthorized: true });
  });
});

describe("tlsFailure", () => {
  const nodeError = (code: string, message: string, extra: object = {}) => Object.assign(new Error(message), { code, ...extra });

  it.each([
    ["UNABLE_TO_VERIFY_LEAF_SIGNATURE", "ca"],
    ["SELF_SIGNED_CERT_IN_CHAIN", "ca"],
    ["DEPTH_ZERO_SELF_SIGNED_CERT", "ca"],
    ["ERR_TLS_CERT_ALTNAME_INVALID", "name"],
    ["CERT_HAS_EXPIRED", "date"],
    ["ERR_SSL_WRONG_VERSION_NUMBER", "not-tls"],
  ])("%s is a %s problem", (code, kind) => {
    expect(tlsFailure(nodeError(code, "m"))).toMatchObject({ kind, code });
  });

  it("finds Node's code under kafkajs's wrappers, without kafkajs's prefix, and the certificate's names", () => {
    const inner = Object.assign(new Error("Connection error: unable to verify the first certificate"), { name: "KafkaJSConnectionError", code: "UNABLE_TO_VERIFY_LEAF_SIGNATURE" });
    const outer = Object.assign(new Error("retries exceeded"), { name: "KafkaJSNumberOfRetriesExceeded", cause: inner });
    expect(tlsFailure(outer)).toEqual({ kind: "ca", code: "UNABLE_TO_VERIFY_LEAF_SIGNATURE", message: "unable to verify the first certificate", certificateNames: null });
    const named = nodeError("ERR_TLS_CERT_ALTNAME_INVALID", "Hostname/IP does not match certificate's altnames", { cert: { subjectaltname: "DNS:localhost" } });
    expect(tlsFailure(new Error("connect", { cause: named }))?.certificateNames).toBe("DNS:localhost");
  });

  it("node-postgres's refusal by a server without TLS; nothing for other errors", () => {
    expect(tlsFailure(new Error("The server does not support SSL connections"))?.kind).toBe("not-tls");
    expect(tlsFailure(nodeError("ECONNREFUSED", "connect ECONNREFUSED 127.0.0.1:1"))).toBeUndefined();
    expect(tlsFailure("a string")).toBeUndefined();
  });
});

describe("causeChain", () => {
  it("follows cause and kafkajs's originalError, outermost first, and stops on a loop", () => {
    const inner = new Error("ECONNREFUSED");
    const retrier = Object.assign(new Error("retries exhausted"), { originalError: inner });
    const outer = new Error("publish batch", { cause: retrier });
    expect(causeChain(outer)).toEqual([outer, retrier, inner]);
    expect(describeError(outer)).toBe("publish batch: retries exhausted: ECONNREFUSED");
    const a = new Error("a") as Error & { cause?: unknown };
    a.cause = a;
    expect(causeChain(a)).toHaveLength(8);
    expect(causeChain("text")).toEqual([]);
    expect(describeError("text")).toBe("text");
  });
});
