/**
 * Preloaded into the daemon by `npm run bench -- --mem-probe` (node --import bench/mem-probe.ts
 * dist/cli.js run): whenever the process's RSS reaches a new peak, writes where the memory is
 * (V8 heap spaces, external, array buffers) as one "MEMPROBE {json}" line to stderr. The bench
 * keeps the last one: the breakdown at peak RSS. Not part of the product.
 */
import v8 from "node:v8";

const MB = 1024 * 1024;
let peak = 0;
const timer = setInterval(() => {
  const m = process.memoryUsage();
  if (m.rss <= peak) return;
  peak = m.rss;
  const spaces: Record<string, number> = {};
  for (const s of v8.getHeapSpaceStatistics()) spaces[s.space_name] = Math.round((s.space_size / MB) * 10) / 10;
  const line = {
    rss_mb: Math.round((m.rss / MB) * 10) / 10,
    heap_total_mb: Math.round((m.heapTotal / MB) * 10) / 10,
    heap_used_mb: Math.round((m.heapUsed / MB) * 10) / 10,
    external_mb: Math.round((m.external / MB) * 10) / 10,
    array_buffers_mb: Math.round((m.arrayBuffers / MB) * 10) / 10,
    heap_spaces_mb: spaces,
  };
  // MEMPROBE_GC=1 (with node --expose-gc): also what is live at that moment, after a full collection.
  const gc = (globalThis as { gc?: () => void }).gc;
  if (process.env.MEMPROBE_GC === "1" && gc) {
    gc();
    const after = process.memoryUsage();
    (line as Record<string, unknown>).live_after_gc_mb = Math.round((after.heapUsed / MB) * 10) / 10;
    // Buffers still referenced after the collection: what is live, not garbage awaiting a GC.
    (line as Record<string, unknown>).array_buffers_after_gc_mb = Math.round((after.arrayBuffers / MB) * 10) / 10;
  }
  process.stderr.write(`MEMPROBE ${JSON.stringify(line)}\n`);
}, 100);
timer.unref();
