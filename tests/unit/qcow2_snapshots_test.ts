import assert from "node:assert/strict";
import { MemoryNode } from "../../src/block/memory.ts";
import {
  checkSnapshotL1,
  findSnapshot,
  type Qcow2Snapshot,
  readSnapshotTable,
} from "../../src/block/qcow2/snapshots.ts";

const CLUSTER = 65536;

/** One snapshot table entry as qcow2 stores it (extra data: VM state size, disk size, icount). */
function encodeEntry(
  fields: { id: string; name: string; l1TableOffset: number; l1Size: number; size?: number },
  extraDataSize = 24,
): Uint8Array {
  const id = new TextEncoder().encode(fields.id);
  const name = new TextEncoder().encode(fields.name);
  const length = Math.ceil((40 + extraDataSize + id.length + name.length) / 8) * 8;
  const bytes = new Uint8Array(length);
  const view = new DataView(bytes.buffer);
  view.setBigUint64(0, BigInt(fields.l1TableOffset));
  view.setUint32(8, fields.l1Size);
  view.setUint16(12, id.length);
  view.setUint16(14, name.length);
  view.setUint32(16, 1795974576);
  view.setUint32(20, 925139000);
  view.setBigUint64(24, 5_000_000_000n);
  view.setUint32(32, 4096);
  view.setUint32(36, extraDataSize);
  if (extraDataSize >= 16) {
    view.setBigUint64(40, 8192n);
    view.setBigUint64(48, BigInt(fields.size ?? 0));
  }
  bytes.set(id, 40 + extraDataSize);
  bytes.set(name, 40 + extraDataSize + id.length);
  return bytes;
}

/** A file holding `entries` one after another at cluster 5. */
async function tableFile(entries: Uint8Array[], size = 8 * CLUSTER): Promise<MemoryNode> {
  const file = new MemoryNode(size);
  let at = 5 * CLUSTER;
  for (const entry of entries) {
    await file.write(at, entry);
    at += entry.length;
  }
  return file;
}

const header = (snapshotCount: number, fields: { snapshotsOffset?: number } = {}) => ({
  snapshotsOffset: 5 * CLUSTER,
  snapshotCount,
  clusterSize: CLUSTER,
  version: 3 as const,
  virtualSize: 1 << 20,
  ...fields,
});

Deno.test("snapshot table: every field, and the size from the header when an entry has none", async () => {
  const file = await tableFile([
    encodeEntry({ id: "1", name: "before", l1TableOffset: 6 * CLUSTER, l1Size: 1, size: 2 << 20 }),
    encodeEntry({ id: "2", name: "é", l1TableOffset: 7 * CLUSTER, l1Size: 2 }, 0),
  ]);
  assert.deepEqual(await readSnapshotTable(file, header(2)), [
    {
      id: "1",
      name: "before",
      l1TableOffset: 6 * CLUSTER,
      l1Size: 1,
      size: 2 << 20,
      dateSeconds: 1795974576,
      dateNanoseconds: 925139000,
      vmClockNanoseconds: 5_000_000_000,
      vmStateSize: 8192,
    },
    {
      id: "2",
      name: "é",
      l1TableOffset: 7 * CLUSTER,
      l1Size: 2,
      size: 1 << 20,
      dateSeconds: 1795974576,
      dateNanoseconds: 925139000,
      vmClockNanoseconds: 5_000_000_000,
      vmStateSize: 4096,
    },
  ]);
  assert.deepEqual(await readSnapshotTable(file, header(0, { snapshotsOffset: 3 })), []);
});

Deno.test("snapshot table: hostile headers and entries fail with QEMU's messages", async () => {
  const entry = encodeEntry({ id: "1", name: "a", l1TableOffset: 6 * CLUSTER, l1Size: 1 });
  const file = await tableFile([entry]);
  await assert.rejects(() => readSnapshotTable(file, header(65537)), {
    message: "Snapshot table too large",
  });
  await assert.rejects(
    () => readSnapshotTable(file, header(1, { snapshotsOffset: 5 * CLUSTER + 8 })),
    { message: "Snapshot table offset invalid" },
  );
  // The file ends after the first entry: the second lies past its end.
  const short = await tableFile([entry], 5 * CLUSTER + entry.length);
  assert.equal((await readSnapshotTable(short, header(1))).length, 1);
  await assert.rejects(() => readSnapshotTable(short, header(2)), {
    message: /Failed to read snapshot table/,
  });
  await assert.rejects(
    () => readSnapshotTable(file, header(1, { snapshotsOffset: 8 * CLUSTER })),
    { message: /Failed to read snapshot table/ },
  );
  const greedy = await tableFile([
    encodeEntry({ id: "1", name: "a", l1TableOffset: 0, l1Size: 0 }, 1032),
  ]);
  await assert.rejects(() => readSnapshotTable(greedy, header(1)), {
    message: "Too much extra metadata in snapshot table entry 0",
  });
});

const base = {
  l1TableOffset: 3 * CLUSTER,
  l1Size: 1,
  size: 1 << 20,
  dateSeconds: 0,
  dateNanoseconds: 0,
  vmClockNanoseconds: 0,
  vmStateSize: 0,
};
const snapshots: Qcow2Snapshot[] = [
  { ...base, id: "1", name: "snap1" },
  { ...base, id: "2", name: "1" },
  { ...base, id: "3", name: "a,b" },
];

Deno.test("findSnapshot: qemu-nbd -l's choice: id first, then name, or snapshot.id/snapshot.name", () => {
  assert.equal(findSnapshot(snapshots, "1").name, "snap1");
  assert.equal(findSnapshot(snapshots, "snap1").id, "1");
  assert.equal(findSnapshot(snapshots, "snapshot.name=1").id, "2");
  assert.equal(findSnapshot(snapshots, "snapshot.id=2").id, "2");
  assert.equal(findSnapshot(snapshots, "snapshot.id=1,snapshot.name=snap1").id, "1");
  assert.equal(findSnapshot(snapshots, "snapshot.id=1,snapshot.id=3").id, "3");
  assert.equal(findSnapshot(snapshots, "snapshot.name=a,,b").id, "3");
  for (const missing of ["9", "nosuch", "snapshot.id=2,snapshot.name=snap1", "snapshot.name="]) {
    assert.throws(() => findSnapshot(snapshots, missing), { message: "Can't find snapshot" });
  }
  assert.throws(() => findSnapshot(snapshots, "snapshot.foo=1"), {
    message: "Invalid parameter 'snapshot.foo'",
  });
});

Deno.test("checkSnapshotL1: QEMU's bounds, and inside the file", () => {
  checkSnapshotL1(snapshots[0], CLUSTER, 4 * CLUSTER);
  assert.throws(
    () => checkSnapshotL1({ ...base, l1Size: 4194305 }, CLUSTER, 1e9),
    {
      message: "Snapshot L1 table too large",
    },
  );
  for (const l1TableOffset of [3 * CLUSTER + 8, 9 * CLUSTER]) {
    assert.throws(
      () => checkSnapshotL1({ ...base, l1TableOffset }, CLUSTER, 4 * CLUSTER),
      { message: "Snapshot L1 table offset invalid" },
    );
  }
});
