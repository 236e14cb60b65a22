import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";

/** Every .md file below `dir`. */
function markdownFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return markdownFiles(path);
    return name.endsWith(".md") ? [path] : [];
  });
}

/** The project's documentation: README.md, bench/README.md and everything under docs/. */
export function docFiles(root: string): string[] {
  return [join(root, "README.md"), join(root, "bench", "README.md"), ...markdownFiles(join(root, "docs"))];
}
