/**
 * Placeholder until branch i14-sasl is merged: the SASL exchange (PLAIN, SCRAM-SHA-256/512) over a
 * connection of the wire producer. This signature is the contract; the real module replaces it.
 */

/** Sends one request (header v1) and resolves with the response body after the correlation id. */
export type RawRequest = (apiKey: number, apiVersion: number, body: Buffer) => Promise<Buffer>;

export async function authenticate(
  request: RawRequest,
  sasl: { mechanism: "plain" | "scram-sha-256" | "scram-sha-512"; username: string; password: string },
): Promise<void> {
  void request;
  throw new Error(`SASL ${sasl.mechanism} for the wire producer is not built yet (branch i14-sasl)`);
}
