/**
 * A slow image for tests that need a request to stay in flight: a 64 MiB
 * read-only image whose every read takes a given time (nbdkit's memory
 * plugin behind its delay filter, mounted by nbdfuse).
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { exists } from "./harness.ts";

/** Mount a 64 MiB read-only image whose reads take `readDelayS` seconds, run `body` with its path. */
export async function withSlowImage(
  readDelayS: number,
  body: (image: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "denbd-slow-" });
  const fuse = new Deno.Command("nbdfuse", {
    args: [
      "--readonly",
      dir,
      "--command",
      "nbdkit",
      "-s",
      "--filter=delay",
      "memory",
      "64M",
      `rdelay=${readDelayS}`,
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    const image = join(dir, "nbd");
    for (const deadline = Date.now() + 10_000; !(await exists(image));) {
      assert.ok(Date.now() < deadline, "nbdfuse did not mount the slow image");
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await body(image);
  } finally {
    fuse.kill("SIGTERM");
    await fuse.status;
    await Deno.remove(dir, { recursive: true });
  }
}
