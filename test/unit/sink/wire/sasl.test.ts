import { describe, expect, it } from "vitest";
import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from "node:crypto";
import {
  API_SASL_AUTHENTICATE,
  API_SASL_HANDSHAKE,
  authenticate,
  authenticateWithNonce,
  plainMessage,
  type RawRequest,
  type SaslSettings,
} from "../../../../src/sink/wire/sasl.js";
import { saslName } from "../../../../src/sink/wire/scram.js";
import { SaslAuthenticationError } from "../../../../src/errors.js";

/**
 * The SASL exchange against a fake broker (pure logic): the fake answers SaslHandshake and
 * SaslAuthenticate bodies as Kafka does, and records what the client sent.
 */

/** A SaslAuthenticate v1 response body. */
function authResponse(authBytes: string | Buffer, errorCode = 0, errorMessage: string | null = null): Buffer {
  const bytes = typeof authBytes === "string" ? Buffer.from(authBytes, "utf8") : authBytes;
  const msg = errorMessage === null ? null : Buffer.from(errorMessage, "utf8");
  const out = Buffer.alloc(2 + 2 + (msg?.length ?? 0) + 4 + bytes.length + 8);
  let at = out.writeInt16BE(errorCode, 0);
  at = out.writeInt16BE(msg === null ? -1 : msg.length, at);
  if (msg) at += msg.copy(out, at);
  at = out.writeInt32BE(bytes.length, at);
  at += bytes.copy(out, at);
  out.writeBigInt64BE(0n, at);
  return out;
}

/** A SaslHandshake v1 response body. */
function handshakeResponse(errorCode: number, mechanisms: string[]): Buffer {
  const parts = mechanisms.map((m) => {
    const b = Buffer.from(m, "utf8");
    const out = Buffer.alloc(2 + b.length);
    out.writeInt16BE(b.length, 0);
    b.copy(out, 2);
    return out;
  });
  const head = Buffer.alloc(6);
  head.writeInt16BE(errorCode, 0);
  head.writeInt32BE(mechanisms.length, 2);
  return Buffer.concat([head, ...parts]);
}

interface Sent {
  apiKey: number;
  apiVersion: number;
  body: Buffer;
}

/** A fake broker: enables `mechanisms`, answers the SaslAuthenticate rounds with `rounds` (given the client's auth bytes). */
function fakeBroker(
  mechanisms: string[],
  rounds: ((clientBytes: Buffer) => Buffer)[],
): { request: RawRequest; sent: Sent[]; auth: Buffer[] } {
  const sent: Sent[] = [];
  const auth: Buffer[] = [];
  const request: RawRequest = async (apiKey, apiVersion, body) => {
    sent.push({ apiKey, apiVersion, body });
    if (apiKey === API_SASL_HANDSHAKE) {
      const mechanism = body.toString("utf8", 2, 2 + body.readInt16BE(0));
      return handshakeResponse(mechanisms.includes(mechanism) ? 0 : 33, mechanisms);
    }
    expect(apiKey).toBe(API_SASL_AUTHENTICATE);
    const clientBytes = body.subarray(4, 4 + body.readInt32BE(0));
    auth.push(clientBytes);
    const round = rounds[auth.length - 1];
    if (!round) throw new Error("the client sent more SaslAuthenticate requests than expected");
    return round(clientBytes);
  };
  return { request, sent, auth };
}

describe("SCRAM-SHA-256: RFC 7677's example, byte for byte", () => {
  const clientNonce = "rOprNGfwEbeRWgbNEkqO";
  const serverFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
  const clientFinal = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
  const serverFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
  const sasl: SaslSettings = { mechanism: "scram-sha-256", username: "user", password: "pencil" };

  it("sends the RFC's client-first and client-final and accepts its server signature", async () => {
    const broker = fakeBroker(["SCRAM-SHA-256"], [() => authResponse(serverFirst), () => authResponse(serverFinal)]);
    await authenticateWithNonce(broker.request, sasl, clientNonce);
    expect(broker.sent.map((s) => [s.apiKey, s.apiVersion])).toEqual([
      [17, 1],
      [36, 1],
      [36, 1],
    ]);
    // SaslHandshake v1's body: the mechanism as an int16-length STRING.
    expect(broker.sent[0]!.body).toEqual(Buffer.concat([Buffer.from([0, 13]), Buffer.from("SCRAM-SHA-256")]));
    expect(broker.auth.map((b) => b.toString("utf8"))).toEqual([`n,,n=user,r=${clientNonce}`, clientFinal]);
  });

  it("refuses the RFC's exchange when the server signature is off by one bit", async () => {
    const bad = Buffer.from(serverFinal.slice(2), "base64");
    bad[0]! ^= 1;
    const broker = fakeBroker(["SCRAM-SHA-256"], [() => authResponse(serverFirst), () => authResponse(`v=${bad.toString("base64")}`)]);
    const e = await authenticateWithNonce(broker.request, sasl, clientNonce).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(SaslAuthenticationError);
    expect((e as Error).name).toBe("SaslAuthenticationError");
    expect((e as Error).message).toContain("server signature is wrong");
    expect((e as Error).message).not.toContain("pencil");
  });

  it("refuses a server-final e= as the broker's refusal, saying what it said", async () => {
    const broker = fakeBroker(["SCRAM-SHA-256"], [() => authResponse(serverFirst), () => authResponse("e=invalid-proof")]);
    await expect(authenticateWithNonce(broker.request, sasl, clientNonce)).rejects.toThrow(/refused the SCRAM proof: invalid-proof/);
  });

  it("refuses a server nonce that does not extend the client's", async () => {
    const foreign = serverFirst.replace("rOprNGfwEbeRWgbNEkqO", "XOprNGfwEbeRWgbNEkqO");
    const broker = fakeBroker(["SCRAM-SHA-256"], [() => authResponse(foreign)]);
    await expect(authenticateWithNonce(broker.request, sasl, clientNonce)).rejects.toMatchObject({
      name: "SaslAuthenticationError",
      message: expect.stringContaining("nonce does not extend"),
    });
    expect(broker.auth).toHaveLength(1); // no proof sent
  });

  it("refuses fewer than 4096 iterations, as Kafka's Java client does", async () => {
    const broker = fakeBroker(["SCRAM-SHA-256"], [() => authResponse(serverFirst.replace("i=4096", "i=4095"))]);
    await expect(authenticateWithNonce(broker.request, sasl, clientNonce)).rejects.toMatchObject({
      name: "SaslAuthenticationError",
      message: expect.stringContaining("4095 SCRAM iterations, fewer than the minimum of 4096"),
    });
    expect(broker.auth).toHaveLength(1);
  });
});

/** The broker's side of SCRAM-SHA-512, computed here independently of src/sink/wire/scram.ts. */
function scram512Server(password: string, iterations: number): ((clientBytes: Buffer) => Buffer)[] {
  const salt = randomBytes(16);
  const salted = pbkdf2Sync(password, salt, iterations, 64, "sha512");
  const hmac = (key: Buffer, data: string) => createHmac("sha512", key).update(data).digest();
  const storedKey = createHash("sha512").update(hmac(salted, "Client Key")).digest();
  const serverKey = hmac(salted, "Server Key");
  let clientFirstBare = "";
  let serverFirst = "";
  return [
    (first) => {
      clientFirstBare = first.toString("utf8").slice("n,,".length);
      const clientNonce = /r=([^,]+)/.exec(clientFirstBare)![1]!;
      serverFirst = `r=${clientNonce}${randomBytes(12).toString("base64")},s=${salt.toString("base64")},i=${iterations}`;
      return authResponse(serverFirst);
    },
    (final) => {
      const text = final.toString("utf8");
      const withoutProof = text.slice(0, text.lastIndexOf(",p="));
      const proof = Buffer.from(text.slice(text.lastIndexOf(",p=") + 3), "base64");
      const authMessage = `${clientFirstBare},${serverFirst},${withoutProof}`;
      const signature = hmac(storedKey, authMessage);
      const clientKey = Buffer.from(proof.map((b, i) => b ^ signature[i]!));
      const ok = timingSafeEqual(createHash("sha512").update(clientKey).digest(), storedKey);
      if (!ok)
        return authResponse(
          "",
          58,
          "Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512",
        );
      return authResponse(`v=${hmac(serverKey, authMessage).toString("base64")}`);
    },
  ];
}

describe("SCRAM-SHA-512 round trip against a server computed here", () => {
  it("logs in with the right password", async () => {
    const broker = fakeBroker(["SCRAM-SHA-256", "SCRAM-SHA-512"], scram512Server("pässwörd, with = signs", 4096));
    await authenticate(broker.request, { mechanism: "scram-sha-512", username: "svc", password: "pässwörd, with = signs" });
    expect(broker.auth).toHaveLength(2);
    // A fresh random base64 nonce each time.
    const nonce = /r=([^,]+)/.exec(broker.auth[0]!.toString("utf8"))![1]!;
    expect(Buffer.from(nonce, "base64").length).toBeGreaterThanOrEqual(18);
  });

  it("a wrong password: SaslAuthenticationError with the broker's error code and message, never the password", async () => {
    const broker = fakeBroker(["SCRAM-SHA-512"], scram512Server("right-password", 4096));
    const e = await authenticate(broker.request, { mechanism: "scram-sha-512", username: "svc", password: "wrong-password" }).catch(
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(SaslAuthenticationError);
    expect((e as SaslAuthenticationError).errorCode).toBe(58);
    expect((e as Error).message).toBe(
      'Kafka refused the SASL SCRAM-SHA-512 login of user "svc": SaslAuthenticate error 58 (SASL_AUTHENTICATION_FAILED): Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512',
    );
    expect((e as Error).message).not.toContain("wrong-password");
  });
});

describe("user name escaping", () => {
  it("escapes = as =3D and , as =2C, in that order", () => {
    expect(saslName("a=b,c")).toBe("a=3Db=2Cc");
    expect(saslName("=2C")).toBe("=3D2C");
    expect(saslName("plain")).toBe("plain");
  });

  it("the client-first message carries the escaped name", async () => {
    const broker = fakeBroker(["SCRAM-SHA-256"], [() => authResponse("", 58, "no")]);
    await authenticateWithNonce(broker.request, { mechanism: "scram-sha-256", username: "ops,team=a", password: "x" }, "abc").catch(
      () => {},
    );
    expect(broker.auth[0]!.toString("utf8")).toBe("n,,n=ops=2Cteam=3Da,r=abc");
  });
});

describe("PLAIN and the handshake", () => {
  it("PLAIN sends one message: NUL, user, NUL, password", async () => {
    const broker = fakeBroker(["PLAIN"], [() => authResponse("")]);
    await authenticate(broker.request, { mechanism: "plain", username: "alice", password: "sésame" });
    expect(broker.auth).toEqual([Buffer.concat([Buffer.from([0]), Buffer.from("alice"), Buffer.from([0]), Buffer.from("sésame", "utf8")])]);
    expect(plainMessage("u", "p")).toEqual(Buffer.from([0, 0x75, 0, 0x70]));
  });

  it("a mechanism the broker does not enable: says which ones it does", async () => {
    const broker = fakeBroker(["SCRAM-SHA-256", "SCRAM-SHA-512"], []);
    const e = await authenticate(broker.request, { mechanism: "plain", username: "alice", password: "sésame" }).catch((x: unknown) => x);
    expect(e).toMatchObject({ name: "SaslAuthenticationError", errorCode: 33 });
    expect((e as Error).message).toContain("does not enable PLAIN");
    expect((e as Error).message).toContain("it enables: SCRAM-SHA-256, SCRAM-SHA-512");
    expect(broker.auth).toHaveLength(0); // the password never left
  });

  it("a truncated response is a broken response, not a refusal", async () => {
    const request: RawRequest = async () => Buffer.from([0, 0, 0]);
    const e = await authenticate(request, { mechanism: "plain", username: "u", password: "p" }).catch((x: unknown) => x);
    expect((e as Error).name).toBe("Error");
    expect((e as Error).message).toMatch(/malformed SaslHandshake response/);
  });
});
