import { existsSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";
import { docFiles } from "../support/markdown.js";

/**
 * The docs name source files in prose and in code spans, which no link check sees: after the split
 * of pipeline.ts, kafka.ts and setup.ts the docs still sent readers to files that were gone. Every
 * `src/...ts` path written in README.md, bench/README.md or docs/ must exist; so must the paths
 * relative to src/ (`sink/publisher.ts`) of the data-flow diagram in docs/architecture.md.
 */
const ROOT = process.cwd();

const FILES = docFiles(ROOT);

/**
 * Every `src/...ts` path in a text, wherever it is written (prose, code span, code block, link);
 * a link's leading `../` are dropped, since every such path is the repository's src/.
 */
function srcPaths(text: string): string[] {
  return [...text.matchAll(/(?<![\w./-])(?:\.\.\/)*(src\/[\w./-]*?\.ts)\b/g)].map((m) => m[1]!);
}

/** Paths of the form `folder/file.ts` (relative to src/) that are not already `src/...` paths. */
function stagePaths(text: string): string[] {
  return [...text.matchAll(/(?<![\w./-])(?!src\/)[a-z][\w-]*\/[\w./-]*?\.ts\b/g)].map((m) => m[0]);
}

describe("source file names in the docs", () => {
  it("finds paths the way the docs write them", () => {
    expect(srcPaths("see `src/sink/kafka.ts` and [ack](../src/checkpoint/ack.ts), src/lsn.ts.")).toEqual([
      "src/sink/kafka.ts",
      "src/checkpoint/ack.ts",
      "src/lsn.ts",
    ]);
    expect(srcPaths("test/unit/src/x.ts mysrc/y.ts")).toEqual([]);
    expect(stagePaths(" source/replication.ts   ReplicationStream\n src/lsn.ts ../src/x.ts")).toEqual(["source/replication.ts"]);
  });

  it("finds the documents and some paths in them", () => {
    expect(FILES.map((f) => relative(ROOT, f))).toEqual(expect.arrayContaining(["README.md", "docs/architecture.md"]));
    expect(srcPaths(readFileSync(join(ROOT, "docs", "architecture.md"), "utf8")).length).toBeGreaterThan(10);
  });

  for (const file of FILES) {
    it(`${relative(ROOT, file)}: every src/ path it names exists`, () => {
      const missing = srcPaths(readFileSync(file, "utf8")).filter((p) => !existsSync(join(ROOT, p)));
      expect([...new Set(missing)]).toEqual([]);
    });
  }

  it("docs/architecture.md: every path relative to src/ (the diagram, the tables) exists", () => {
    const text = readFileSync(join(ROOT, "docs", "architecture.md"), "utf8");
    const missing = stagePaths(text).filter((p) => !existsSync(join(ROOT, "src", p)));
    expect([...new Set(missing)]).toEqual([]);
  });
});
