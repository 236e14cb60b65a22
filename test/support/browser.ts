import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type BrowserContext } from "playwright-core";
import { registerCleanup } from "./cleanup.js";

/**
 * Debian's Chromium (scripts/chromium.sh installs it), driven by playwright-core, which never
 * downloads a browser of its own.
 */
export const CHROMIUM = "/usr/bin/chromium";

/**
 * Without these, Chromium on a machine with no way out tries Google's services at start (sync,
 * component updates, QUIC probes), and the refused connections make the first page load slow.
 */
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export interface Browser {
  context: BrowserContext;
  close(): Promise<void>;
}

/** A fresh Chromium with its own empty profile (nothing cached from an earlier run), closed by the cleanup hooks if the test is not. */
export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM))
    throw new Error(`${CHROMIUM} is missing: run \`sudo bash scripts/chromium.sh\` (installs Debian's chromium package)`);
  const profile = mkdtempSync(join(tmpdir(), "eventstream-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: { width: 1280, height: 800 },
  });
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await context.close().catch(() => undefined);
    rmSync(profile, { recursive: true, force: true });
  };
  const unregister = registerCleanup("process", `chromium (profile ${profile})`, close);
  return {
    context,
    close: async () => {
      await close();
      unregister();
    },
  };
}
