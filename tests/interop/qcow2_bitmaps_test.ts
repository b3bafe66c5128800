/**
 * qcow2 persistent bitmaps and the snapshot table against QEMU: images made
 * by qemu-img and qemu-io load with the names, granularities, flags and bits
 * qemu-nbd serves; bitmaps denbd stores are listed by `qemu-img info`,
 * served identically by qemu-nbd, pass `qemu-img check`, and survive QEMU
 * writing to the image. The image is kept by the test fixture standing in
 * for the qcow2 driver's metadata (tests/unit/qcow2_metadata_fixture.ts).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { type DirtyBitmap, DirtyBitmap as Bitmap } from "../../src/block/dirty-bitmap.ts";
import { FileNode } from "../../src/block/file.ts";
import { loadBitmaps, removeStoredBitmap, storeBitmaps } from "../../src/block/qcow2/bitmaps.ts";
import { readSnapshotTable } from "../../src/block/qcow2/snapshots.ts";
import { TestQcow2Metadata } from "../unit/qcow2_metadata_fixture.ts";
import { check, needs, run, startQemuNbd, withTempDir } from "./harness.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** The bitmaps `qemu-img info` lists (format-specific data), [] when none. */
async function qemuBitmaps(path: string, unlocked = false): Promise<unknown[]> {
  const info = JSON.parse(
    await check("qemu-img", ["info", ...(unlocked ? ["-U"] : []), "--output=json", path]),
  );
  return info["format-specific"].data.bitmaps ?? [];
}

/** Dirty ranges as `[offset, length]` pairs, adjacent ones merged. */
type Ranges = Array<[number, number]>;

/** The dirty ranges of bitmap `name` as qemu-nbd serves them (qemu:dirty-bitmap:NAME). */
async function qemuDirtyRanges(path: string, name: string): Promise<Ranges> {
  const server = await startQemuNbd({ args: ["-r", "-f", "qcow2", "-B", name, path] });
  try {
    const map = await check("nbdinfo", [`--map=qemu:dirty-bitmap:${name}`, server.uri]);
    const ranges: Ranges = [];
    for (const line of map.trim().split("\n")) {
      const [offset, length, flags] = line.trim().split(/\s+/).map(Number);
      if (flags & 1) push(ranges, offset, length);
    }
    return ranges;
  } finally {
    await server.stop();
  }
}

/** Add a range, merging it with the previous one when they touch. */
function push(ranges: Ranges, offset: number, length: number): void {
  const last = ranges.at(-1);
  if (last && last[0] + last[1] === offset) last[1] += length;
  else ranges.push([offset, length]);
}

/** The dirty ranges of a loaded bitmap. */
function dirtyRanges(bitmap: DirtyBitmap): Ranges {
  const ranges: Ranges = [];
  let offset = 0;
  for (const extent of bitmap.dirtyExtents(0, bitmap.size)) {
    if (extent.dirty) push(ranges, offset, extent.length);
    offset += extent.length;
  }
  return ranges;
}

/** Load the bitmaps of the image at `path` through the fixture (read-only unless `writable`). */
async function load(path: string, writable = false): Promise<DirtyBitmap[]> {
  const file = await FileNode.open(path, { readOnly: !writable, growable: writable });
  try {
    return await loadBitmaps(await TestQcow2Metadata.open(file, writable));
  } finally {
    await file.close();
  }
}

/**
 * Run `body` with the image at `path` open writable through the fixture,
 * without image locks, so that qemu-img may look at it between steps.
 */
async function withImage<T>(
  path: string,
  body: (metadata: TestQcow2Metadata) => Promise<T>,
): Promise<T> {
  const file = await FileNode.open(path, { growable: true, lock: false });
  try {
    return await body(await TestQcow2Metadata.open(file));
  } finally {
    await file.close();
  }
}

/** `qemu-img check` finds nothing wrong (no corruption, no leak). */
async function assertCheckClean(path: string): Promise<void> {
  const result = await run("qemu-img", ["check", path]);
  assert.equal(result.code, 0, result.stdout + result.stderr);
  assert.match(result.stdout, /No errors were found on the image/);
}

/** Each loaded bitmap has the bits qemu-nbd serves for it. */
async function assertSameBits(path: string, bitmaps: readonly DirtyBitmap[]): Promise<void> {
  for (const bitmap of bitmaps) {
    assert.deepEqual(dirtyRanges(bitmap), await qemuDirtyRanges(path, bitmap.name), bitmap.name);
  }
}

const qemuIo = (path: string, ...commands: string[]) =>
  check("qemu-io", ["-f", "qcow2", ...commands.flatMap((command) => ["-c", command]), path]);

Deno.test({
  name:
    "bitmaps made by qemu-img and qemu-io load with QEMU's names, granularities, flags and bits",
  ...needs("qemu-img", "qemu-io", "qemu-nbd", "nbdinfo"),
  fn: () =>
    withTempDir(async (dir) => {
      const path = join(dir, "disk.qcow2");
      await check("qemu-img", ["create", "-f", "qcow2", path, "8M"]);
      await check("qemu-img", ["bitmap", "--add", path, "b0"]);
      await qemuIo(path, "write 0 64k");
      await check("qemu-img", ["bitmap", "--add", "-g", "4096", path, "b1"]);
      await qemuIo(path, "write 1M 4k", "write 5000k 100k");
      await check("qemu-img", ["bitmap", "--disable", path, "b0"]);
      await check("qemu-img", ["bitmap", "--add", "-g", "512", "--disable", path, "b2"]);
      await check("qemu-img", ["bitmap", "--merge", "b1", path, "b2"]);
      await check("qemu-img", ["bitmap", "--add", path, "cleared"]);
      await qemuIo(path, "write 7M 512", "write 8191k 1k");
      await check("qemu-img", ["bitmap", "--clear", path, "cleared"]);

      const bitmaps = await load(path);
      assert.deepEqual(
        bitmaps.map((b) => ({
          flags: b.enabled ? ["auto"] : [],
          name: b.name,
          granularity: b.granularity,
        })),
        await qemuBitmaps(path),
      );
      assert.ok(bitmaps.every((b) => b.persistent && b.readOnly && !b.inconsistent));
      assert.ok(bitmaps.every((b) => b.name === "cleared" ? b.count === 0 : b.count > 0));
      await assertSameBits(path, bitmaps);
    }),
});

Deno.test({
  name:
    "bitmaps denbd stores: listed by qemu-img info, served alike by qemu-nbd, clean for qemu-img check, and QEMU writes to them",
  ...needs("qemu-img", "qemu-io", "qemu-nbd", "nbdinfo"),
  fn: () =>
    withTempDir(async (dir) => {
      const path = join(dir, "disk.qcow2");
      await check("qemu-img", ["create", "-f", "qcow2", path, "8M"]);
      const size = 8 * MiB;
      const b0 = new Bitmap("b0", size, { persistent: true });
      b0.mark(0, 1);
      b0.mark(3 * MiB, MiB + 7);
      const b1 = new Bitmap("b1", size, { persistent: true, granularity: 512, disabled: true });
      b1.mark(size - 600, 600);
      const empty = new Bitmap("empty", size, { persistent: true, granularity: 4096 });
      await withImage(path, (metadata) => storeBitmaps(metadata, [b0, b1, empty]));

      assert.deepEqual(await qemuBitmaps(path), [
        { flags: ["auto"], name: "b0", granularity: 65536 },
        { flags: [], name: "b1", granularity: 512 },
        { flags: ["auto"], name: "empty", granularity: 4096 },
      ]);
      await assertCheckClean(path);
      await assertSameBits(path, [b0, b1, empty]);

      // QEMU loads them, records a write in the enabled ones and stores them again.
      await qemuIo(path, "write 6M 64k");
      const reloaded = await load(path);
      assert.deepEqual(dirtyRanges(reloaded[0]), [
        [0, 64 * KiB],
        [3 * MiB, MiB + 64 * KiB],
        [6 * MiB, 64 * KiB],
      ]);
      assert.deepEqual(dirtyRanges(reloaded[1]), dirtyRanges(b1));
      await assertSameBits(path, reloaded);
    }),
});

Deno.test({
  name:
    "opening writable marks bitmaps in use as QEMU does; storing and removing keep qemu-img check clean",
  ...needs("qemu-img", "qemu-io"),
  fn: () =>
    withTempDir(async (dir) => {
      const path = join(dir, "disk.qcow2");
      await check("qemu-img", ["create", "-f", "qcow2", path, "8M"]);
      await check("qemu-img", ["bitmap", "--add", path, "b0"]);
      await check("qemu-img", ["bitmap", "--add", "-g", "4096", path, "b1"]);
      await qemuIo(path, "write 64k 4k");
      await withImage(path, async (metadata) => {
        const loaded = await loadBitmaps(metadata);
        const listed = await qemuBitmaps(path, true);
        assert.deepEqual(listed.map((b) => (b as { flags: string[] }).flags), [
          ["in-use", "auto"],
          ["in-use", "auto"],
        ]);
        await assertCheckClean(path);
        loaded[1].mark(2 * MiB, 1);
        loaded[0].enabled = false;
        await storeBitmaps(metadata, loaded);
        await assertCheckClean(path);
        assert.deepEqual(await qemuBitmaps(path), [
          { flags: [], name: "b0", granularity: 65536 },
          { flags: ["auto"], name: "b1", granularity: 4096 },
        ]);
        await removeStoredBitmap(metadata, "b0");
        assert.deepEqual((await qemuBitmaps(path)).map((b) => (b as { name: string }).name), [
          "b1",
        ]);
        await assertCheckClean(path);
        await removeStoredBitmap(metadata, "b1");
      });
      assert.deepEqual(await qemuBitmaps(path), []);
      await assertCheckClean(path);
      // And QEMU agrees the image has no bitmaps left to load.
      await qemuIo(path, "write 0 4k");
      await assertCheckClean(path);
    }),
});

Deno.test({
  name: "snapshot table: what qemu-img snapshot -c wrote, as qemu-img info lists it",
  ...needs("qemu-img", "qemu-io"),
  fn: () =>
    withTempDir(async (dir) => {
      const path = join(dir, "disk.qcow2");
      await check("qemu-img", ["create", "-f", "qcow2", path, "4M"]);
      await check("qemu-img", ["snapshot", "-c", "first", path]);
      await qemuIo(path, "write 0 64k");
      await check("qemu-img", ["snapshot", "-c", "second snapshot", path]);
      await check("qemu-img", ["snapshot", "-c", "1", path]);

      const file = await FileNode.open(path, { readOnly: true });
      try {
        const header = new Uint8Array(72);
        await file.read(0, header);
        const view = new DataView(header.buffer);
        const snapshots = await readSnapshotTable(file, {
          snapshotCount: view.getUint32(60),
          snapshotsOffset: Number(view.getBigUint64(64)),
          clusterSize: 2 ** view.getUint32(20),
          version: 3,
        });
        const info = JSON.parse(await check("qemu-img", ["info", "--output=json", path]));
        assert.deepEqual(
          snapshots.map((s) => ({
            id: s.id,
            name: s.name,
            "date-sec": s.dateSeconds,
            "date-nsec": s.dateNanoseconds,
            "vm-clock-sec": Math.floor(s.vmClockNanoseconds / 1e9),
            "vm-clock-nsec": s.vmClockNanoseconds % 1e9,
            "vm-state-size": s.vmStateSize,
          })),
          info.snapshots.map((s: Record<string, unknown>) => ({
            id: s.id,
            name: s.name,
            "date-sec": s["date-sec"],
            "date-nsec": s["date-nsec"],
            "vm-clock-sec": s["vm-clock-sec"],
            "vm-clock-nsec": s["vm-clock-nsec"],
            "vm-state-size": s["vm-state-size"],
          })),
        );
        assert.ok(snapshots.every((s) => s.size === 4 * MiB && s.l1Size === 1));
      } finally {
        await file.close();
      }
    }),
});
