import { UserActionError, describeError } from "../errors.js";

/** One line of `check` or `status`: what was looked at, how it is, and (when not ok) what to do. */
export interface Finding {
  check: string;
  verdict: "ok" | "warning" | "problem";
  detail: string;
}

/**
 * Runs one check: its text when it passes; a UserActionError's message (which says what to do) or
 * any other error's description when it does not. `warning`: a returned string that is advice, not
 * a failure (e.g. what a start would create).
 */
export async function finding(check: string, run: () => Promise<string | { warning: string }>): Promise<Finding> {
  try {
    const out = await run();
    return typeof out === "string" ? { check, verdict: "ok", detail: out } : { check, verdict: "warning", detail: out.warning };
  } catch (e: unknown) {
    return { check, verdict: "problem", detail: e instanceof UserActionError ? e.message : describeError(e) };
  }
}

/** Text for a person: one line per finding, the word first so problems stand out. */
export function formatFindings(findings: Finding[]): string {
  const word = { ok: "ok     ", warning: "warning", problem: "PROBLEM" } as const;
  return findings.map((f) => `${word[f.verdict]}  ${f.check}: ${f.detail}`).join("\n");
}

/** Exit code of `check` and `status`: 1 when anything needs action. */
export function exitCode(findings: Finding[]): number {
  return findings.some((f) => f.verdict === "problem") ? 1 : 0;
}

/** JSON output: bigints (LSNs, offsets) as strings. */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v), 2);
}
