/**
 * `denbd serve` used by QEMU's own tools (qemu-img, qemu-io) exactly as they
 * use qemu-nbd, with qemu-nbd run on the same image as the reference.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  check,
  makeSparseImage,
  needs,
  run,
  startDenbd,
  startQemuNbd,
  withServer,
  withTempDir,
} from "./harness.ts";

const MiB = 1024 * 1024;
/** Data regions of the sparse test image: unaligned, adjacent and at the very end. */
const REGIONS = [[0, 4096], [MiB + 512, 3000], [5 * MiB, 256 * 1024], [
  16 * MiB - 4096,
  4096,
]] as const;

Deno.test("qemu-img info sees the export's size", needs("qemu-img"), async () => {
  await withTempDir(async (dir) => {
    const image = join(dir, "disk.img");
    await makeSparseImage(image, 16 * MiB, REGIONS);
    await withServer(startDenbd, { args: ["-f", "raw", "-t", image] }, async (server) => {
      const info = JSON.parse(await check("qemu-img", ["info", "--output=json", server.uri]));
      assert.equal(info["virtual-size"], 16 * MiB);
    });
  });
});

Deno.test(
  "qemu-img map --output=json is identical to qemu-nbd's on the same sparse image",
  needs("qemu-img", "qemu-nbd"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, 16 * MiB, REGIONS);
      const map = (starter: typeof startDenbd) =>
        withServer(
          starter,
          { args: ["-f", "raw", "-t", "-r", image] },
          (server) => check("qemu-img", ["map", "--output=json", "-f", "raw", server.uri]),
        );
      const ours = await map(startDenbd);
      const reference = await map(startQemuNbd);
      assert.equal(ours, reference);
      assert.ok(JSON.parse(ours).some((extent: { data: boolean }) => !extent.data), "has holes");
    });
  },
);

Deno.test("qemu-img convert both ways and compare", needs("qemu-img"), async () => {
  await withTempDir(async (dir) => {
    const source = join(dir, "source.img");
    const copy = join(dir, "copy.img");
    const target = join(dir, "target.img");
    await makeSparseImage(source, 16 * MiB, REGIONS);
    await withServer(startDenbd, { args: ["-f", "raw", "-t", "-r", source] }, async (server) => {
      await check("qemu-img", ["convert", "-f", "raw", "-O", "raw", server.uri, copy]);
      await check("qemu-img", ["compare", "-f", "raw", "-F", "raw", server.uri, source]);
    });
    await check("qemu-img", ["compare", "-f", "raw", "-F", "raw", copy, source]);
    await makeSparseImage(target, 16 * MiB);
    await withServer(startDenbd, { args: ["-f", "raw", "-t", target] }, async (server) => {
      await check("qemu-img", ["convert", "-n", "-f", "raw", "-O", "raw", source, server.uri]);
      await check("qemu-img", ["compare", "-f", "raw", "-F", "raw", source, server.uri]);
    });
    await check("qemu-img", ["compare", "-f", "raw", "-F", "raw", source, target]);
  });
});

Deno.test("qemu-io write/read -P, write -z, discard and flush", needs("qemu-io"), async () => {
  await withTempDir(async (dir) => {
    const image = join(dir, "disk.img");
    await makeSparseImage(image, 4 * MiB);
    await withServer(
      startDenbd,
      { args: ["-f", "raw", "-t", "--discard=unmap", image] },
      async (server) => {
        const io = (...commands: string[]) =>
          check("qemu-io", ["-f", "raw", ...commands.flatMap((c) => ["-c", c]), server.uri]);
        const output = await io(
          "write -P 0xab 0 128k",
          "read -P 0xab 0 128k",
          "write -z 64k 32k",
          "read -P 0 64k 32k",
          "read -P 0xab 96k 32k",
          "write -P 0xcd 1m 64k",
          "discard 1m 64k",
          "read -P 0 1m 64k",
          "flush",
        );
        assert.doesNotMatch(output, /fail|error/i);
        assert.match(output, /wrote 131072\/131072 bytes at offset 0/);
        assert.match(output, /discard 65536\/65536 bytes at offset 1048576/);
        const mismatch = await run("qemu-io", ["-f", "raw", "-c", "read -P 0x11 0 4k", server.uri]);
        assert.match(mismatch.stdout + mismatch.stderr, /Pattern verification failed/);
      },
    );
    const bytes = await Deno.readFile(image);
    assert.equal(bytes[0], 0xab, "writes reached the file");
    assert.equal(bytes[64 * 1024], 0);
  });
});

Deno.test(
  "every --cache mode serves aligned and unaligned I/O correctly",
  needs("qemu-io"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      for (const mode of ["writeback", "writethrough", "none", "directsync", "unsafe"]) {
        await makeSparseImage(image, 4 * MiB);
        await withServer(
          startDenbd,
          { args: ["-f", "raw", "-t", `--cache=${mode}`, image] },
          (server) =>
            check("qemu-io", [
              "-f",
              "raw",
              ...["write -P 0x11 0 64k", "write -P 0x22 1000 3000", "flush"].flatMap((
                c,
              ) => ["-c", c]),
              ...["read -P 0x11 0 1000", "read -P 0x22 1000 3000", "read -P 0x11 4000 61536"]
                .flatMap((c) => ["-c", c]),
              server.uri,
            ]),
        );
        const bytes = await Deno.readFile(image);
        assert.deepEqual([bytes[999], bytes[1000], bytes[3999], bytes[4000]], [
          0x11,
          0x22,
          0x22,
          0x11,
        ], mode);
      }
    });
  },
);

Deno.test(
  "--discard=unmap punches holes on TRIM; ignore keeps the data",
  needs("qemu-io", "nbdinfo"),
  async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      for (const [mode, expectHole] of [["unmap", true], ["ignore", false]] as const) {
        await makeSparseImage(image, 4 * MiB, [[0, 4 * MiB]]);
        await withServer(
          startDenbd,
          { args: ["-f", "raw", "-t", `--discard=${mode}`, image] },
          async (server) => {
            await check("qemu-io", ["-f", "raw", "-c", "discard 1m 1m", server.uri]);
            const map = await check("nbdinfo", ["--map", server.uri]);
            assert.equal(
              /1048576 +1048576 +3 +hole,zero/.test(map),
              expectHole,
              `${mode}:\n${map}`,
            );
          },
        );
      }
    });
  },
);
