import { cpSync, existsSync } from "node:fs";

// The build's non-TypeScript files: the live page of `serve` (src/serve/page/) goes
// beside the compiled modules, where src/serve/static.ts looks for it first.
if (existsSync("src/serve/page")) cpSync("src/serve/page", "dist/serve/page", { recursive: true });
