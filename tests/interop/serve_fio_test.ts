/**
 * fio's nbd engine (libnbd) against `denbd serve`: random writes at queue
 * depth 16 verified by checksum. Speed is measured by scripts/bench.ts, never
 * here; this only checks that what fio writes is what it reads back.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { makeSparseImage, needs, run, startDenbd, withServer, withTempDir } from "./harness.ts";

Deno.test("fio random writes at QD16 read back verified", needs("fio"), async () => {
  await withTempDir(async (dir) => {
    const image = join(dir, "disk.img");
    await makeSparseImage(image, 32 * 1024 * 1024);
    await withServer(startDenbd, { args: ["-f", "raw", "-t", image] }, async (server) => {
      const result = await run("fio", [
        "--name=verify",
        "--ioengine=nbd",
        `--uri=${server.uri}`,
        "--rw=randwrite",
        "--bs=4k",
        "--iodepth=16",
        "--size=32M",
        "--verify=crc32c",
        "--do_verify=1",
        "--verify_fatal=1",
        "--verify_state_save=0",
        "--output-format=json",
      ], { cwd: dir });
      assert.equal(result.code, 0, result.stderr + result.stdout);
      // fio prints "fio: connected to NBD server" ahead of its JSON.
      const job = JSON.parse(result.stdout.slice(result.stdout.indexOf("{"))).jobs[0];
      assert.equal(job.error, 0);
      assert.equal(job.write.total_ios, 8192);
      assert.ok(job.read.total_ios >= 8192, "every block was read back and verified");
    });
  });
});
