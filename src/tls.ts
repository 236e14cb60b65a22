import { assertNever, type TlsFailure } from "./errors.js";

/**
 * How one service words a failed TLS handshake. PostgreSQL and the Kafka brokers fail in the same
 * four ways (errors.ts `tlsFailure`) and share the sentence; each names its own host and settings,
 * so the operator reads which variable to change.
 */
export interface TlsService {
  /** Who presented the certificate, opening the sentence: "PostgreSQL at db:5432", "Kafka broker k1:9093". */
  peer: string;
  /** The CAs the chain was checked against: "the CA in PGSSLROOTCERT (/etc/ca.pem)". */
  trusted: string;
  /** The name the certificate had to carry: `"db.internal"`, "the host connected to". */
  expectedName: string;
  /** The setting that demanded that name, when one did: "which PGSSLMODE=verify-full requires". */
  nameRequiredBy?: string;
  /** What a peer that does not speak TLS does, with the setting that asked for TLS: "does not accept TLS connections (PGSSLMODE=require)". */
  notTls: string;
  /** What to change, per kind of failure. */
  fix: Record<TlsFailure["kind"], string>;
}

/** What happened in a failed TLS handshake and what to change, for a TlsError. */
export function explainTlsFailure(tls: TlsFailure, service: TlsService): string {
  const { peer, fix } = service;
  switch (tls.kind) {
    case "ca":
      return `${peer} presented a certificate not signed by ${service.trusted} (${tls.code}: ${tls.message}): ${fix.ca}`;
    case "name": {
      const names = tls.certificateNames ? `; it names ${tls.certificateNames}` : "";
      const requiredBy = service.nameRequiredBy ? `, ${service.nameRequiredBy}` : "";
      return `${peer} presented a certificate that does not name ${service.expectedName} (${tls.message}${names})${requiredBy}: ${fix.name}`;
    }
    case "date":
      return `${peer} presented a certificate that is expired or not yet valid (${tls.code}: ${tls.message}): ${fix.date}`;
    case "not-tls":
      return `${peer} ${service.notTls}: ${fix["not-tls"]}`;
    default:
      return assertNever(tls.kind);
  }
}
