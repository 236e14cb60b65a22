import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { OpenAPIHono } from "@hono/zod-openapi";

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".json": "application/json",
};

/**
 * The live page's hook: the files of src/serve/page/ (the page helper's) at GET / (index.html) and
 * GET /page/*. Read relative to this module, from src/serve/page/ in a checkout, else from
 * dist/serve/page/ (`npm run build` copies the directory there); nothing is served when the directory does not
 * exist. Paths are resolved and must stay inside the directory (no ../ escape).
 */
export function servePage(app: OpenAPIHono, dir = pageDir()): void {
  if (dir === null) return;
  const root = path.resolve(dir);
  const file = (rel: string) => {
    const full = path.resolve(root, rel);
    if (!full.startsWith(root + path.sep) || !existsSync(full) || !statSync(full).isFile()) return null;
    return { body: readFileSync(full), type: TYPES[path.extname(full)] ?? "application/octet-stream" };
  };
  app.get("/", (c) => {
    const f = file("index.html");
    return f === null ? c.notFound() : c.body(f.body, 200, { "content-type": f.type });
  });
  app.get("/page/*", (c) => {
    let rel: string;
    try {
      rel = decodeURIComponent(c.req.path.slice("/page/".length));
    } catch {
      return c.notFound();
    }
    const f = file(rel);
    return f === null ? c.notFound() : c.body(f.body, 200, { "content-type": f.type, "cache-control": "no-cache" });
  });
}

function pageDir(): string | null {
  const here = path.dirname(fileURLToPath(import.meta.url));
  // The sources first: in a checkout dist/serve/page/ is a copy from the last `npm run build` and may
  // be stale; an installed package or the image has no src/ and serves the copy.
  for (const candidate of [path.join(here, "../../src/serve/page"), path.join(here, "page")]) if (existsSync(candidate)) return candidate;
  return null;
}
