import assert from "node:assert/strict";
import { DirtyBitmapCommands } from "../../src/block/bitmap-commands.ts";
import { DirtyBitmap } from "../../src/block/dirty-bitmap.ts";
import { DirtyTrackingNode } from "../../src/block/dirty-tracking.ts";
import { DenbdError } from "../../src/errors.ts";
import { MemoryNode } from "../../src/block/memory.ts";
import {
  type BitmapDirectoryEntry,
  bitmapTableSize,
  decodeBitmapDirectory,
  decodeBitmapsExtension,
  decodeBitmapTable,
  encodeBitmapDirectory,
  encodeBitmapsExtension,
  encodeBitmapTable,
} from "../../src/block/qcow2/bitmap-format.ts";
import {
  ignoredBitmapsWarning,
  loadBitmaps,
  readBitmapDirectory,
  removeStoredBitmap,
  storeBitmaps,
} from "../../src/block/qcow2/bitmaps.ts";
import { qcow2BitmapStore } from "../../src/block/qcow2/bitmap-store.ts";
import { TestQcow2Metadata } from "./qcow2_metadata_fixture.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const CLUSTER = 64 * KiB;

/** Assert that `body` fails with a DenbdError whose message is `message`. */
async function rejects(body: () => unknown, message: string | RegExp): Promise<void> {
  await assert.rejects(async () => await body(), (error: unknown) => {
    assert.ok(error instanceof DenbdError, String(error));
    if (typeof message === "string") assert.equal(error.message, message);
    else assert.match(error.message, message);
    return true;
  });
}

/** A fresh image of `size` bytes in memory. */
function image(size = 4 * MiB, clusterSize = CLUSTER): Promise<TestQcow2Metadata> {
  return TestQcow2Metadata.create(new MemoryNode(0, { growable: true }), size, clusterSize);
}

/** A persistent bitmap over `size` bytes with the given dirty ranges. */
function bitmap(
  name: string,
  size: number,
  ranges: Array<[number, number]>,
  options: { granularity?: number; disabled?: boolean } = {},
): DirtyBitmap {
  const created = new DirtyBitmap(name, size, { persistent: true, ...options });
  for (const [offset, length] of ranges) created.mark(offset, length);
  return created;
}

const entry = (fields: Partial<BitmapDirectoryEntry> = {}): BitmapDirectoryEntry => ({
  name: "b0",
  tableOffset: CLUSTER,
  tableSize: 1,
  granularityBits: 16,
  inUse: false,
  auto: true,
  ...fields,
});

const limits = { clusterSize: CLUSTER, virtualSize: 4 * MiB };

Deno.test("bitmap bits: stored form is one bit per granule, lowest bit first", () => {
  const bits = new DirtyBitmap("b", 100 * 4096, { granularity: 4096 });
  bits.mark(0, 1); // granule 0
  bits.mark(9 * 4096, 4096); // granule 9
  bits.mark(99 * 4096, 1); // the last granule
  assert.equal(bits.storedBytes, 13);
  const stored = new Uint8Array(16);
  bits.exportBits(0, stored);
  assert.deepEqual([...stored], [1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0]);
  const tail = new Uint8Array(2);
  bits.exportBits(12, tail);
  assert.deepEqual([...tail], [8, 0]);
  assert.ok(bits.anyDirtyIn(1, 1) && !bits.anyDirtyIn(2, 10) && bits.anyDirtyIn(12, 100));

  const copy = new DirtyBitmap("c", 100 * 4096, { granularity: 4096 });
  copy.importBits(0, stored.map((byte, index) => index === 12 ? 0xff : byte));
  // Granules 0 and 9, and 96..99 of byte 12 (its bits for 100..103 lie past the end).
  assert.equal(copy.count, 6 * 4096);
  const ones = new DirtyBitmap("d", 100 * 4096, { granularity: 4096 });
  ones.importOnes(8, 100);
  assert.deepEqual(ones.dirtyExtents(0, 100 * 4096), [
    { length: 64 * 4096, dirty: false },
    { length: 36 * 4096, dirty: true },
  ]);
});

Deno.test("bitmap bits: an inconsistent bitmap is disabled, clean and holds no storage", async () => {
  const huge = new DirtyBitmap("h", 2 ** 52, { granularity: 512, inconsistent: true });
  assert.ok(huge.inconsistent && !huge.enabled);
  assert.equal(huge.count, 0);
  assert.deepEqual(huge.dirtyExtents(0, 2 ** 52, 4), [{ length: 2 ** 52, dirty: false }]);
  const small = new DirtyBitmap("s", MiB, { granularity: 65536, inconsistent: true });
  const clean = new DirtyBitmap("c", MiB, { granularity: 65536 });
  assert.equal(await small.sha256(), await clean.sha256());
});

Deno.test("bitmaps extension: round trip and QEMU's checks and messages", () => {
  const extension = { count: 2, directorySize: 64, directoryOffset: 3 * CLUSTER };
  assert.deepEqual(decodeBitmapsExtension(encodeBitmapsExtension(extension), CLUSTER), extension);
  const bad = (change: (view: DataView) => void, message: string) => {
    const data = encodeBitmapsExtension(extension);
    change(new DataView(data.buffer));
    assert.throws(() => decodeBitmapsExtension(data, CLUSTER), { message });
  };
  assert.throws(
    () => decodeBitmapsExtension(new Uint8Array(16), CLUSTER),
    { message: "bitmaps_ext: Invalid extension length" },
  );
  bad((view) => view.setUint32(4, 1), "bitmaps_ext: Reserved field is not zero");
  bad(
    (view) => view.setUint32(0, 65536),
    "bitmaps_ext: Image has 65536 bitmaps, exceeding the QEMU supported maximum of 65535",
  );
  bad((view) => view.setUint32(0, 0), "found bitmaps extension with zero bitmaps");
  bad((view) => view.setUint32(20, 512), "bitmaps_ext: invalid bitmap directory offset");
  bad(
    (view) => view.setUint32(8, 1),
    "bitmaps_ext: bitmap directory size (4294967360) exceeds the maximum supported size (67107840)",
  );
});

Deno.test("bitmap directory: round trip, names in UTF-8, entries padded to 8 bytes", () => {
  const entries = [
    entry(),
    entry({ name: "é-bitmap", inUse: true, auto: false, granularityBits: 9 }),
  ];
  const bytes = encodeBitmapDirectory(entries);
  assert.equal(bytes.length, 32 + 40);
  assert.deepEqual(decodeBitmapDirectory(bytes, 2, limits), entries);
  assert.deepEqual([...bytes.subarray(26, 32)], [0, 0, 0, 0, 0, 0]);
});

Deno.test("bitmap directory: every QEMU check, with its message", () => {
  const good = encodeBitmapDirectory([entry()]);
  const bad = (
    change: (view: DataView, bytes: Uint8Array) => Uint8Array | void,
    message: string,
    count = 1,
  ) => {
    const bytes = good.slice();
    const changed = change(new DataView(bytes.buffer), bytes) ?? bytes;
    assert.throws(() => decodeBitmapDirectory(changed, count, limits), { message }, message);
  };
  const constraints = "Bitmap 'b0' doesn't satisfy the constraints";
  bad((_, bytes) => bytes.subarray(0, 20), "Broken bitmap directory");
  bad((view) => view.setUint16(18, 100), "Broken bitmap directory");
  bad(() => {}, "More bitmaps found than specified in header extension", 0);
  bad(() => {}, "Less bitmaps found than specified in header extension", 2);
  bad((view) => view.setUint32(20, 8), "Broken bitmap directory");
  bad(
    (_, bytes) => {
      const longer = new Uint8Array(40);
      longer.set(bytes.subarray(0, 24));
      new DataView(longer.buffer).setUint32(20, 8);
      longer.set(bytes.subarray(24, 26), 32);
      return longer;
    },
    "Bitmap extra data is not supported",
  );
  bad((view) => view.setUint8(17, 8), constraints);
  bad((view) => view.setUint8(17, 32), constraints);
  bad((view) => view.setUint8(16, 2), constraints);
  bad((view) => view.setUint32(12, 4 | 2), constraints);
  bad((view) => view.setUint32(8, 0), constraints);
  bad((view) => view.setBigUint64(0, 0n), constraints);
  bad((view) => view.setBigUint64(0, 65537n), constraints);
  bad((view) => view.setUint32(8, 0x8000001), constraints);
  bad((view) => view.setUint32(8, 8193), constraints); // over 512 MiB of bitmap data
  // One cluster of bits at 512-byte granules covers 256 MiB, not 4 GiB...
  const big = { clusterSize: CLUSTER, virtualSize: 4 * 1024 * MiB };
  const small = encodeBitmapDirectory([entry({ granularityBits: 9 })]);
  assert.throws(() => decodeBitmapDirectory(small, 1, big), { message: constraints });
  // ...which QEMU accepts for a bitmap in use (stale after a resize).
  const stale = encodeBitmapDirectory([entry({ granularityBits: 9, inUse: true })]);
  assert.equal(decodeBitmapDirectory(stale, 1, big)[0].inUse, true);
  const twice = encodeBitmapDirectory([entry(), entry()]);
  assert.throws(() => decodeBitmapDirectory(twice, 2, limits), {
    message: "Bitmap already exists: b0",
  });
  assert.throws(() => decodeBitmapDirectory(new Uint8Array(0), 1, limits), {
    message: "Requested bitmap directory size is zero",
  });
});

Deno.test("bitmap table: entries, and the reserved bits QEMU refuses", () => {
  const table = encodeBitmapTable([0, 3 * CLUSTER]);
  assert.deepEqual(decodeBitmapTable(table, CLUSTER), [
    { kind: "zeroes" },
    { kind: "data", offset: 3 * CLUSTER },
  ]);
  const entryBytes = (high: number, low: number) => {
    const bytes = new Uint8Array(8);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, high);
    view.setUint32(4, low);
    return bytes;
  };
  assert.deepEqual(decodeBitmapTable(entryBytes(0, 1), CLUSTER), [{ kind: "ones" }]);
  assert.equal(decodeBitmapTable(entryBytes(0, 2), CLUSTER), undefined); // bit 1 reserved
  assert.equal(decodeBitmapTable(entryBytes(0x01000000, 0), CLUSTER), undefined); // bit 56
  assert.equal(decodeBitmapTable(entryBytes(0, CLUSTER + 1), CLUSTER), undefined); // ones + offset
  assert.equal(decodeBitmapTable(entryBytes(0, 512), CLUSTER), undefined); // unaligned
  assert.equal(bitmapTableSize(4 * MiB, 16, CLUSTER), 1);
  assert.equal(bitmapTableSize(2 ** 40, 9, 512), 2 ** 40 / 512 / 8 / 512);
});

Deno.test("store then load: names, granularity, flags and bits come back; empty clusters take no space", async () => {
  const size = 64 * MiB;
  const metadata = await image(size, 512);
  const b0 = bitmap("b0", size, [[0, 1], [40 * MiB, 3 * MiB]]);
  const b1 = bitmap("b1", size, [[size - 1, 1]], { granularity: 512, disabled: true });
  const empty = bitmap("empty", size, []);
  const transient = new DirtyBitmap("transient", size);
  const before = metadata.file.size;
  await storeBitmaps(metadata, [b0, b1, empty, transient]);
  const directory = await readBitmapDirectory(metadata);
  assert.deepEqual(directory.map((e) => [e.name, e.granularityBits, e.inUse, e.auto]), [
    ["b0", 16, false, true],
    ["b1", 9, false, false],
    ["empty", 16, false, true],
  ]);
  // b1: 131072 granules = 16 KiB of bits = 32 clusters of 512 bytes, one dirty;
  // b0: 128 bytes of bits in one cluster; empty: no data cluster. Tables: 1 each. Directory: 1.
  assert.equal((metadata.file.size - before) / 512, 1 + 1 + 3 + 1);
  assert.equal(metadata.bitmapsConsistent, true);

  const reopened = await TestQcow2Metadata.open(metadata.file, false);
  const loaded = await loadBitmaps(reopened);
  assert.deepEqual(loaded.map((b) => [b.name, b.granularity, b.enabled, b.persistent]), [
    ["b0", 65536, true, true],
    ["b1", 512, false, true],
    ["empty", 65536, true, true],
  ]);
  for (const [index, original] of [b0, b1, empty].entries()) {
    assert.equal(await loaded[index].sha256(), await original.sha256(), original.name);
    assert.ok(loaded[index].readOnly && !loaded[index].inconsistent);
  }
});

Deno.test("load on a writable image marks every bitmap in use first; in-use bitmaps load inconsistent", async () => {
  const metadata = await image();
  await storeBitmaps(metadata, [bitmap("b0", 4 * MiB, [[0, 1]])]);
  const writable = await TestQcow2Metadata.open(metadata.file);
  const [loaded] = await loadBitmaps(writable);
  assert.ok(!loaded.inconsistent && !loaded.readOnly && loaded.count === 65536);
  assert.deepEqual((await readBitmapDirectory(writable)).map((e) => e.inUse), [true]);
  assert.equal(writable.bitmapsConsistent, true);

  // A crash now: the next open finds the bitmap in use.
  const [stale] = await loadBitmaps(await TestQcow2Metadata.open(metadata.file));
  assert.ok(stale.inconsistent && !stale.enabled && stale.count === 0);

  // Storing a loaded bitmap replaces its data, table and directory and frees the old ones.
  const used = await writable.usedClusters();
  loaded.mark(MiB, 1);
  await storeBitmaps(writable, [loaded]);
  const now = await writable.usedClusters();
  assert.equal(now.length, used.length);
  assert.notDeepEqual(now, used);
  const [again] = await loadBitmaps(await TestQcow2Metadata.open(metadata.file, false));
  assert.equal(again.count, 2 * 65536);
});

Deno.test("store refuses what QEMU refuses and leaves the image as it was", async () => {
  const metadata = await image();
  await storeBitmaps(metadata, [bitmap("b0", 4 * MiB, [])]);
  const used = await metadata.usedClusters();
  // b0 is stored and not in use (the image was not loaded writable): a second b0 is refused.
  await rejects(
    () => storeBitmaps(metadata, [bitmap("b0", 4 * MiB, [[0, 1]])]),
    "Bitmap 'b0' already exists in the image",
  );
  assert.deepEqual(await metadata.usedClusters(), used);
  const readOnly = await TestQcow2Metadata.open(metadata.file, false);
  await rejects(() => storeBitmaps(readOnly, [bitmap("b1", 4 * MiB, [])]), "No write access");
  // Read-only, inconsistent and transient bitmaps are not stored; nothing to store is no error.
  await storeBitmaps(readOnly, [
    new DirtyBitmap("ro", 4 * MiB, { persistent: true, readOnly: true }),
    new DirtyBitmap("bad", 4 * MiB, { persistent: true, inconsistent: true }),
    new DirtyBitmap("t", 4 * MiB),
  ]);
});

Deno.test("remove drops one bitmap at once, and the extension with the last one; clusters are freed", async () => {
  const metadata = await image();
  const initial = await metadata.usedClusters();
  await storeBitmaps(metadata, [
    bitmap("b0", 4 * MiB, [[0, 1]]),
    bitmap("b1", 4 * MiB, [[MiB, 1]]),
  ]);
  await removeStoredBitmap(metadata, "b0");
  assert.deepEqual((await readBitmapDirectory(metadata)).map((e) => e.name), ["b1"]);
  await removeStoredBitmap(metadata, "nosuch");
  await removeStoredBitmap(metadata, "b1");
  assert.equal(metadata.bitmapsExtension, undefined);
  assert.equal(metadata.bitmapsConsistent, false);
  assert.deepEqual(await metadata.usedClusters(), initial);
});

Deno.test("an extension without the autoclear bit is ignored, as QEMU ignores it", async () => {
  const metadata = await image();
  await storeBitmaps(metadata, [bitmap("b0", 4 * MiB, [[0, 1]])]);
  await metadata.writeBitmapsExtension(metadata.bitmapsExtension, false);
  assert.match(ignoredBitmapsWarning(metadata)!, /program lacking bitmap support/);
  assert.deepEqual(await loadBitmaps(metadata), []);
  // A new store starts a new directory (the old clusters leak, as with QEMU).
  await storeBitmaps(metadata, [bitmap("b1", 4 * MiB, [])]);
  assert.deepEqual((await readBitmapDirectory(metadata)).map((e) => e.name), ["b1"]);
  assert.equal(ignoredBitmapsWarning(metadata), undefined);
});

Deno.test("hostile tables and data fail with QEMU's messages and write nothing", async () => {
  const metadata = await image();
  await storeBitmaps(metadata, [bitmap("b0", 4 * MiB, [[0, 1]])]);
  const [stored] = await readBitmapDirectory(metadata);
  const table = new Uint8Array(8);
  await metadata.file.read(stored.tableOffset, table);
  const corrupt = async (entryValue: bigint, message: string) => {
    const bytes = new Uint8Array(8);
    new DataView(bytes.buffer).setBigUint64(0, entryValue);
    await metadata.file.write(stored.tableOffset, bytes);
    const snapshot = new Uint8Array(metadata.file.size);
    await metadata.file.read(0, snapshot);
    await rejects(async () => loadBitmaps(await TestQcow2Metadata.open(metadata.file)), message);
    const after = new Uint8Array(metadata.file.size);
    await metadata.file.read(0, after);
    assert.deepEqual(after, snapshot, "nothing written into a broken image");
  };
  await corrupt(
    2n,
    "Could not read bitmap_table table from image for bitmap 'b0': Invalid argument",
  );
  await corrupt(2n ** 40n, "Could not read bitmap 'b0' from image: Invalid argument");
  // All ones without a cluster is fine.
  const ones = new Uint8Array(8);
  ones[7] = 1;
  await metadata.file.write(stored.tableOffset, ones);
  const [full] = await loadBitmaps(await TestQcow2Metadata.open(metadata.file, false));
  assert.equal(full.count, 4 * MiB);
  // A directory past the end of the file.
  const extension = encodeBitmapsExtension({
    count: 1,
    directorySize: 32,
    directoryOffset: 1024 * CLUSTER,
  });
  await metadata.writeBitmapsExtension(extension, true);
  await rejects(() => loadBitmaps(metadata), "Failed to read bitmap directory: Invalid argument");
});

Deno.test("the store adapter: QEMU's checks for a new persistent bitmap", async () => {
  const metadata = await image();
  const store = qcow2BitmapStore(metadata);
  assert.throws(() => store.checkNewBitmap("b0", 65536), /before load/);
  assert.deepEqual(await store.load(), []);
  store.checkNewBitmap("b0", 65536);
  assert.throws(() => store.checkNewBitmap("b0", 256), {
    message: "Granularity is under minimum (512 bytes)",
  });
  assert.throws(() => store.checkNewBitmap("x".repeat(1024), 65536), {
    message: "Name length exceeds maximum (1023 characters)",
  });
  await store.store([bitmap("b0", 4 * MiB, [[0, 1]])]);
  assert.throws(() => store.checkNewBitmap("b0", 65536), {
    message: "Bitmap with the same name is already stored",
  });
  store.checkNewBitmap("b1", 65536);
  await store.remove("b0");
  store.checkNewBitmap("b0", 65536);

  const v2 = new MemoryNode(0, { growable: true });
  await TestQcow2Metadata.create(v2, MiB);
  await v2.write(4, new Uint8Array([0, 0, 0, 2]));
  const v2Store = qcow2BitmapStore(await TestQcow2Metadata.open(v2));
  await v2Store.load();
  assert.throws(() => v2Store.checkNewBitmap("b0", 65536), {
    message: "Cannot store dirty bitmaps in qcow2 v2 files",
  });
});

Deno.test("QMP bitmap commands on a node with a qcow2 store: QEMU's prefix, and remove reaches the image at once", async () => {
  const metadata = await image();
  await storeBitmaps(metadata, [bitmap("stored", 4 * MiB, [[0, 1]])]);
  const store = qcow2BitmapStore(metadata);
  const node = new DirtyTrackingNode(new MemoryNode(4 * MiB), { persistentStore: store });
  for (const loaded of await store.load()) node.bitmaps.adopt(loaded);
  const commands = new DirtyBitmapCommands((name) => name === "disk" ? node : undefined);
  // As qemu-storage-daemon 7.2: the name in use first, then the image's own checks.
  assert.throws(() => commands.add("disk", "stored", { persistent: true }), {
    message: "Bitmap already exists: stored",
  });
  assert.throws(() => commands.add("disk", "x".repeat(1024), { persistent: true }), {
    message: `Can't make bitmap '${"x".repeat(1024)}' persistent in 'disk': ` +
      "Name length exceeds maximum (1023 characters)",
  });
  commands.add("disk", "new", { persistent: true });
  await commands.remove("disk", "new"); // not in the image yet: nothing to remove there
  await commands.remove("disk", "stored");
  assert.equal(node.bitmaps.find("stored"), undefined);
  assert.deepEqual(await readBitmapDirectory(metadata), []);
});

Deno.test("replacing a stale bitmap whose old table is corrupt leaks its clusters instead of freeing them", async () => {
  const metadata = await image();
  await storeBitmaps(metadata, [bitmap("b0", 4 * MiB, [[0, 1]])]);
  const [loaded] = await loadBitmaps(metadata); // now in use in the image
  const [old] = await readBitmapDirectory(metadata);
  const corrupt = new Uint8Array(8);
  corrupt[7] = 2; // a reserved bit
  await metadata.file.write(old.tableOffset, corrupt);
  const used = await metadata.usedClusters();
  await storeBitmaps(metadata, [loaded]);
  const now = await metadata.usedClusters();
  // The old table and data cluster stay allocated; a new table and data cluster
  // and a new directory were added, and only the old directory was freed.
  assert.ok(now.includes(old.tableOffset));
  assert.equal(now.length, used.length + 2);
  const [stored] = await loadBitmaps(await TestQcow2Metadata.open(metadata.file, false));
  assert.equal(stored.count, 65536);
});
