import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { describe, expect, it } from "vitest";
import { docFiles } from "../support/markdown.js";

/**
 * The documentation is split over README.md, docs/ and bench/README.md, and cross-links by file and
 * heading: a renamed heading or a moved file would leave a link that GitHub renders as dead, and
 * nothing else notices. Every relative link must name a file that exists and, with an anchor, a
 * heading of that file.
 */
const ROOT = process.cwd();

const FILES = docFiles(ROOT);

/** The text outside fenced code blocks and inline code spans: links in code are not links. */
function prose(text: string): string {
  return text.replace(/^```[\s\S]*?^```/gm, "").replace(/`[^`\n]*`/g, "");
}

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens; repeats get -1, -2, ... */
function anchors(text: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const line of text.replace(/^```[\s\S]*?^```/gm, "").split("\n")) {
    const m = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!m) continue;
    const base = m[1]!
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, "")
      .replace(/\s/g, "-");
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

/** Every relative link of a file: [text](target), target without a scheme. */
function relativeLinks(text: string): string[] {
  const links: string[] = [];
  for (const m of prose(text).matchAll(/\]\(([^)\s]+)\)/g)) {
    const target = m[1]!;
    if (!/^[a-z][a-z0-9+.-]*:/i.test(target)) links.push(target);
  }
  return links;
}

describe("documentation links", () => {
  it("finds the documents", () => {
    expect(FILES.map((f) => relative(ROOT, f))).toEqual(expect.arrayContaining(["README.md", "docs/architecture.md", "bench/README.md"]));
  });

  for (const file of FILES) {
    it(`${relative(ROOT, file)}: every relative link resolves to a file and a heading`, () => {
      const text = readFileSync(file, "utf8");
      const dead: string[] = [];
      for (const link of relativeLinks(text)) {
        const [path, anchor] = link.split("#", 2) as [string, string | undefined];
        const target = path === "" ? file : join(dirname(file), decodeURIComponent(path));
        if (!existsSync(target)) {
          dead.push(`${link}: no such file`);
          continue;
        }
        if (anchor === undefined || !target.endsWith(".md")) continue;
        if (!anchors(readFileSync(target, "utf8")).has(anchor)) dead.push(`${link}: no such heading in ${relative(ROOT, target)}`);
      }
      expect(dead).toEqual([]);
    });
  }

  it("README.md stays a front page (at most 15 KB); the rest lives in docs/", () => {
    expect(statSync(join(ROOT, "README.md")).size).toBeLessThanOrEqual(15 * 1024);
  });
});
