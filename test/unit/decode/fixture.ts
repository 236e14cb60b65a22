import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/**
 * The messages of a captured pgoutput fixture (test/fixtures/pgoutput/<name>.hex, written by
 * capture.ts): one hex-encoded message per line, '#' lines are comments.
 */
export function fixture(name: string): Buffer[] {
  const path = fileURLToPath(new URL(`../../fixtures/pgoutput/${name}.hex`, import.meta.url));
  return readFileSync(path, "utf8")
    .split("\n")
    .filter((line) => line !== "" && !line.startsWith("#"))
    .map((line) => Buffer.from(line, "hex"));
}
