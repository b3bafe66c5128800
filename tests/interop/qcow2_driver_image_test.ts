/**
 * The qcow2 driver with qemu-img and qemu-io as judges: images it creates,
 * host offsets above 4 GiB, concurrent writes into one new cluster, and the
 * metadata operations the persistent-bitmap code uses.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { FileNode } from "../../src/block/file.ts";
import { createQcow2, Qcow2Node } from "../../src/block/qcow2/qcow2-node.ts";
import { check, needs, run, withTempDir } from "./harness.ts";
import {
  assertSameBytes,
  assertSameMap,
  openImage,
  qemuIo,
  readAll,
} from "./qcow2_driver_support.ts";

const MiB = 1 << 20;
const GiB = 1 << 30;

/** Assert that `qemu-img check` finds nothing wrong (no errors, no leaks). */
async function assertClean(path: string): Promise<void> {
  const result = await run("qemu-img", ["check", path]);
  assert.ok(
    result.code === 0 && result.stdout.includes("No errors were found on the image."),
    `qemu-img check ${path}: ${result.stdout}${result.stderr}`,
  );
}

Deno.test(
  "qcow2 create: what qemu-img accepts, with a backing file",
  needs("qemu-img"),
  () =>
    withTempDir(async (dir) => {
      const base = join(dir, "base.raw");
      await check("qemu-img", ["create", "-f", "raw", base, String(8 * MiB)]);
      for (const clusterSize of [512, 65536, 2 * MiB]) {
        const path = join(dir, `new-${clusterSize}.qcow2`);
        const file = await FileNode.open(await touch(path), { growable: true });
        await createQcow2(file, {
          size: 3 * GiB,
          clusterSize,
          backing: { filename: "base.raw", format: "raw" },
        });
        await file.close();
        await assertClean(path);
        const info = JSON.parse(await check("qemu-img", ["info", "--output=json", path]));
        assert.equal(info["virtual-size"], 3 * GiB);
        assert.equal(info["cluster-size"], clusterSize);
        assert.equal(info["backing-filename"], "base.raw");
        assert.equal(info["backing-filename-format"], "raw");
        assert.equal(info["format-specific"].data.compat, "1.1");
        assert.equal(info["format-specific"].data["refcount-bits"], 16);
      }
    }),
);

/** Create an empty file at `path` and return the path. */
async function touch(path: string): Promise<string> {
  await Deno.writeFile(path, new Uint8Array());
  return path;
}

Deno.test(
  "qcow2 offsets above 4 GiB",
  needs("qemu-img", "qemu-io"),
  () =>
    withTempDir(async (dir) => {
      const path = join(dir, "big.qcow2");
      await check("qemu-img", [
        "create",
        "-f",
        "qcow2",
        "-o",
        "preallocation=metadata",
        path,
        String(6 * GiB),
      ]);
      const high = 5 * GiB + 12345;
      await qemuIo(path, [`write -P 0x42 ${high} 100000`]);
      const image = await openImage(path, "qcow2");
      try {
        const into = new Uint8Array(100000);
        await image.node.read(high, into);
        assert.ok(into.every((byte) => byte === 0x42), "reads what qemu-io wrote");
        await image.node.write(high + 200000, new Uint8Array(70000).fill(0x43));
        await image.node.flush();
        await assertSameMap(image.node, path);
      } finally {
        await image.close();
      }
      await qemuIo(path, [`read -P 0x43 ${high + 200000} 70000`]);
      await assertClean(path);
    }),
);

Deno.test(
  "qcow2 concurrent writes into one new cluster allocate it once",
  needs("qemu-img", "qemu-io"),
  () =>
    withTempDir(async (dir) => {
      for (const options of ["compat=1.1", "extended_l2=on"]) {
        const path = join(dir, "concurrent.qcow2");
        await check("qemu-img", ["create", "-f", "qcow2", "-o", options, path, String(4 * MiB)]);
        const image = await openImage(path, "qcow2");
        try {
          await Promise.all(
            Array.from(
              { length: 16 },
              (_, i) => image.node.write(MiB + i * 4096, new Uint8Array(4096).fill(i + 1)),
            ),
          );
          await image.node.flush();
        } finally {
          await image.close();
        }
        await assertClean(path);
        const map = JSON.parse(await check("qemu-img", ["map", "--output=json", path]));
        const data = map.filter((entry: { data: boolean }) => entry.data);
        assert.equal(data.length, 1, `${options}: one allocated run: ${JSON.stringify(map)}`);
        await qemuIo(
          path,
          Array.from({ length: 16 }, (_, i) => `read -P ${i + 1} ${MiB + i * 4096} 4096`),
        );
      }
    }),
);

Deno.test(
  "qcow2 metadata: clusters for bitmaps and the bitmaps extension",
  needs("qemu-img"),
  () =>
    withTempDir(async (dir) => {
      const path = join(dir, "meta.qcow2");
      await check("qemu-img", ["create", "-f", "qcow2", path, String(16 * MiB)]);
      const file = await FileNode.open(path, { growable: true });
      const node = await Qcow2Node.open(file);
      const metadata = node.metadata;
      assert.equal(metadata.writable, true);
      assert.equal(metadata.bitmapsExtension, undefined);
      const first = await metadata.allocateClusters(3);
      assert.ok(metadata.clusterSize <= first && first % metadata.clusterSize === 0);
      await file.write(first, new Uint8Array(3 * metadata.clusterSize).fill(1));
      assert.ok(metadata.isValidMetadataRange(first, 3 * metadata.clusterSize));
      assert.ok(!metadata.isValidMetadataRange(0, 512), "cluster 0 holds the header");
      assert.ok(!metadata.isValidMetadataRange(first, 2 ** 40), "past the end of the file");
      await metadata.freeClusters(first, 3);
      const again = await metadata.allocateClusters(2);
      assert.equal(again, first, "freed clusters are reused");
      await metadata.freeClusters(again, 2);
      await node.close();
      await file.close();
      await assertClean(path);
    }),
);

Deno.test(
  "qcow2 writes beside an internal snapshot leave the snapshot as it was",
  needs("qemu-img", "qemu-io"),
  () =>
    withTempDir(async (dir) => {
      for (const options of ["compat=1.1", "extended_l2=on", "compat=0.10"]) {
        const path = join(dir, "snap.qcow2");
        await check("qemu-img", ["create", "-f", "qcow2", "-o", options, path, String(4 * MiB)]);
        await qemuIo(path, ["write -P 0x21 0 1M", "write -z 2M 64k"]);
        await check("qemu-img", ["snapshot", "-c", "before", path]);
        const snapshotRaw = join(dir, "before.raw");
        await check("qemu-img", ["convert", "-l", "snapshot.name=before", path, snapshotRaw]);
        const image = await openImage(path, "qcow2", { discard: "unmap" });
        try {
          await image.node.write(1000, new Uint8Array(70000).fill(0x22));
          await image.node.writeZeroes(65536 * 5, 65536, { mayTrim: true });
          await image.node.trim(65536 * 8, 65536 * 2);
          await image.node.write(2 * MiB + 512, new Uint8Array(512).fill(0x23));
          await image.node.flush();
        } finally {
          await image.close();
        }
        await assertClean(path);
        const file = await FileNode.open(path, { readOnly: true });
        try {
          const active = await Qcow2Node.open(file);
          assert.deepEqual(active.snapshots.map((snapshot) => snapshot.name), ["before"]);
          const [{ l1TableOffset, l1Size, size }] = active.snapshots;
          const atSnapshot = await Qcow2Node.open(file, {
            snapshot: { l1TableOffset, l1Size, size },
          });
          assertSameBytes(await readAll(atSnapshot), await Deno.readFile(snapshotRaw), "snapshot");
        } finally {
          await file.close();
        }
        const after = join(dir, "after.raw");
        await check("qemu-img", ["convert", "-l", "snapshot.name=before", path, after]);
        assert.deepEqual(await Deno.readFile(after), await Deno.readFile(snapshotRaw), options);
        await qemuIo(path, [
          "read -P 0x21 0 1000",
          "read -P 0x22 1000 70000",
          "read -P 0x21 71000 256680",
          "read -P 0 327680 65536",
          "read -P 0x23 2097664 512",
        ]);
      }
    }),
);
