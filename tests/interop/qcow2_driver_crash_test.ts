/**
 * Crash safety: a process writing through the qcow2 driver is killed with
 * SIGKILL in the middle of its writes; then `qemu-img check` finds no
 * corruption (leaked clusters are allowed) and every write followed by a
 * completed flush is there.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { check, needs, ROOT, run, withTempDir } from "./harness.ts";
import { SLOT, slotByte, slotOffset, SLOTS } from "./qcow2_driver_crash_writer.ts";

/** Start the writer on `path`, kill it once it reported `target` flushed slots; returns that count. */
async function writeAndKill(path: string, target: number): Promise<number> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", join(ROOT, "tests/interop/qcow2_driver_crash_writer.ts"), path],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  let flushed = 0;
  let text = "";
  const decoder = new TextDecoder();
  const reader = child.stdout.getReader();
  try {
    while (flushed < target) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
      for (const match of text.matchAll(/flushed (\d+)\n/g)) flushed = Number(match[1]);
      text = text.slice(text.lastIndexOf("\n") + 1);
    }
  } finally {
    child.kill("SIGKILL");
    reader.releaseLock();
    await child.stdout.cancel();
    await child.status;
  }
  return flushed;
}

for (const clusterSize of [4096, 65536]) {
  Deno.test(
    `qcow2 survives kill -9 mid-write (${clusterSize}-byte clusters)`,
    needs("qemu-img", "qemu-io"),
    () =>
      withTempDir(async (dir) => {
        const path = join(dir, "crash.qcow2");
        await check("qemu-img", [
          "create",
          "-f",
          "qcow2",
          "-o",
          `cluster_size=${clusterSize}`,
          path,
          String(SLOTS * SLOT),
        ]);
        const flushed = await writeAndKill(path, 1500);
        assert.ok(flushed >= 1500, `the writer reported ${flushed} flushed slots`);
        const checked = await run("qemu-img", ["check", "--output=json", path]);
        const report = JSON.parse(checked.stdout);
        assert.equal(report["corruptions"] ?? 0, 0, checked.stdout);
        assert.ok(checked.code === 0 || checked.code === 3, checked.stdout + checked.stderr);
        const reads = [];
        for (let i = 0; i < flushed; i++) {
          reads.push("-c", `read -q -P ${slotByte(i)} ${slotOffset(i)} ${SLOT}`);
        }
        for (let at = 0; at < reads.length; at += 1000) {
          const result = await run("qemu-io", ["-f", "qcow2", ...reads.slice(at, at + 1000), path]);
          assert.equal(result.code, 0, result.stderr);
          assert.ok(
            !/Pattern verification failed/.test(result.stdout),
            result.stdout.slice(0, 500),
          );
        }
      }),
  );
}
