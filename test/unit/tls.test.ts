import { describe, expect, it } from "vitest";
import type { ConnectionOptions } from "node:tls";
import type { Config } from "../../src/config.js";
import { causeChain, describeError, tlsFailure, type TlsFailure } from "../../src/errors.js";
import { pgClientConfig, pgTlsService } from "../../src/source/connection.js";
import { explainTlsFailure, type TlsService } from "../../src/tls.js";

const CA = { path: "/etc/ca.pem", pem: "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n" };

function pgSsl(sslmode: Config["pg"]["sslmode"], sslRootCert: Config["pg"]["sslRootCert"]): ConnectionOptions | boolean | undefined {
  const pg: Config["pg"] = {
    hosts: [{ host: "db", port: 5432 }],
    targetSessionAttrs: "any",
    host: "db",
    port: 5432,
    user: "u",
    password: undefined,
    database: "airflow",
    sslmode,
    sslRootCert,
  };
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
    const inner = Object.assign(new Error("Connection error: unable to verify the first certificate"), {
      name: "KafkaJSConnectionError",
      code: "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
    });
    const outer = Object.assign(new Error("retries exceeded"), { name: "KafkaJSNumberOfRetriesExceeded", cause: inner });
    expect(tlsFailure(outer)).toEqual({
      kind: "ca",
      code: "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
      message: "unable to verify the first certificate",
      certificateNames: null,
    });
    const named = nodeError("ERR_TLS_CERT_ALTNAME_INVALID", "Hostname/IP does not match certificate's altnames", {
      cert: { subjectaltname: "DNS:localhost" },
    });
    expect(tlsFailure(new Error("connect", { cause: named }))?.certificateNames).toBe("DNS:localhost");
  });

  it("node-postgres's refusal by a server without TLS; nothing for other errors", () => {
    expect(tlsFailure(new Error("The server does not support SSL connections"))?.kind).toBe("not-tls");
    expect(tlsFailure(nodeError("ECONNREFUSED", "connect ECONNREFUSED 127.0.0.1:1"))).toBeUndefined();
    expect(tlsFailure("a string")).toBeUndefined();
  });
});

describe("explainTlsFailure", () => {
  const failure = (kind: TlsFailure["kind"], certificateNames: string | null = null): TlsFailure => ({
    kind,
    code: "CODE",
    message: "msg",
    certificateNames,
  });
  const pg = (sslRootCert: Config["pg"]["sslRootCert"]): Config["pg"] => ({
    hosts: [{ host: "db", port: 5432 }],
    targetSessionAttrs: "any",
    host: "db",
    port: 5432,
    user: "u",
    password: undefined,
    database: "airflow",
    sslmode: "verify-full",
    sslRootCert,
  });

  it("PostgreSQL: names the server, the PG* setting to change and the server-side fix", () => {
    const where = "PostgreSQL at db:5432";
    expect(explainTlsFailure(failure("ca"), pgTlsService(pg(CA)))).toBe(
      `${where} presented a certificate not signed by the CA in PGSSLROOTCERT (/etc/ca.pem) (CODE: msg): set PGSSLROOTCERT to the PEM file of the CA that signed the server's certificate`,
    );
    expect(explainTlsFailure(failure("ca"), pgTlsService(pg(null)))).toContain(
      "not signed by the CAs Node.js trusts (PGSSLROOTCERT is not set) (CODE: msg)",
    );
    expect(explainTlsFailure(failure("name", "DNS:localhost"), pgTlsService(pg(null)))).toBe(
      `${where} presented a certificate that does not name "db" (msg; it names DNS:localhost), which PGSSLMODE=verify-full requires: set PGHOST to a name in the certificate, or give the server a certificate that names db`,
    );
    expect(explainTlsFailure(failure("name"), pgTlsService(pg(null)))).toContain('does not name "db" (msg), which');
    expect(explainTlsFailure(failure("date"), pgTlsService(pg(null)))).toBe(
      `${where} presented a certificate that is expired or not yet valid (CODE: msg): renew the server's certificate, or check this machine's clock`,
    );
    expect(explainTlsFailure(failure("not-tls"), pgTlsService(pg(null)))).toBe(
      `${where} does not accept TLS connections (PGSSLMODE=verify-full): turn on ssl in the server's postgresql.conf, or set PGSSLMODE=disable`,
    );
  });

  it("Kafka: the sink's wording, with no setting that demands the name", () => {
    // As src/sink/kafka-errors.ts words a broker's failure (its explainTls).
    const kafka: TlsService = {
      peer: "Kafka broker k1:9093",
      trusted: "the CAs Node.js trusts (KAFKA_SSL_CA_FILE is not set)",
      expectedName: "the host connected to",
      notTls: "does not speak TLS on that port (KAFKA_SSL=true)",
      fix: {
        ca: "set KAFKA_SSL_CA_FILE to the PEM file of the CA that signed the brokers' certificates",
        name: "list the brokers in KAFKA_BROKERS by names their certificates carry (and advertise such names in the brokers' advertised.listeners), or give the brokers certificates that name their hosts",
        date: "renew the brokers' certificates, or check this machine's clock",
        "not-tls": "point KAFKA_BROKERS at the brokers' SSL or SASL_SSL listener, or set KAFKA_SSL=false",
      },
    };
    expect(explainTlsFailure(failure("name", "DNS:b"), kafka)).toBe(
      "Kafka broker k1:9093 presented a certificate that does not name the host connected to (msg; it names DNS:b): list the brokers in KAFKA_BROKERS by names their certificates carry (and advertise such names in the brokers' advertised.listeners), or give the brokers certificates that name their hosts",
    );
    expect(explainTlsFailure(failure("not-tls"), kafka)).toBe(
      "Kafka broker k1:9093 does not speak TLS on that port (KAFKA_SSL=true): point KAFKA_BROKERS at the brokers' SSL or SASL_SSL listener, or set KAFKA_SSL=false",
    );
    expect(explainTlsFailure(failure("date"), kafka)).toBe(
      "Kafka broker k1:9093 presented a certificate that is expired or not yet valid (CODE: msg): renew the brokers' certificates, or check this machine's clock",
    );
    expect(explainTlsFailure(failure("ca"), kafka)).toBe(
      "Kafka broker k1:9093 presented a certificate not signed by the CAs Node.js trusts (KAFKA_SSL_CA_FILE is not set) (CODE: msg): set KAFKA_SSL_CA_FILE to the PEM file of the CA that signed the brokers' certificates",
    );
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
