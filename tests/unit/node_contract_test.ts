/**
 * The BlockNode contract (src/block/node.ts), checked the same way on every
 * node: what a node does with zeroing and its options, and how a read-only
 * node refuses changes, must not depend on which node it is.
 */
import assert from "node:assert/strict";
import type { BlockNode } from "../../src/block/node.ts";
import { MemoryNode } from "../../src/block/memory.ts";
import { FileNode } from "../../src/block/file.ts";
import { RawNode } from "../../src/block/raw.ts";
import { createQcow2, Qcow2Node } from "../../src/block/qcow2/qcow2-node.ts";

const CHUNK = 64 * 1024;
const SIZE = 4 * CHUNK;

/** A node under test, with its own measure of the storage it occupies. */
interface Opened {
  readonly node: BlockNode;
  /** Bytes of storage allocated (memory chunks, file system blocks). */
  allocatedBytes(): Promise<number>;
  /** Close the children the node does not close itself, after it. */
  closeChildren?(): Promise<void>;
}

/** A way to open a node of SIZE bytes (all zero) in `dir`. */
interface Subject {
  readonly name: string;
  /** Reads and whole-page writes of cached data are done at once (readNow/writeNow). */
  readonly now: boolean;
  /** Whether a range holds data is known at once (holdsDataNow) once it was written. */
  readonly knowsData: boolean;
  open(dir: string, readOnly: boolean): Promise<Opened>;
}

async function fileOf(dir: string): Promise<string> {
  const path = `${dir}/disk.img`;
  using file = await Deno.open(path, { create: true, write: true });
  await file.truncate(SIZE);
  return path;
}

/** Storage of a file: its 512-byte blocks on disk. */
function blocksOf(path: string) {
  return async () => ((await Deno.stat(path)).blocks ?? 0) * 512;
}

/** Storage of a memory node: the bytes its block status calls data. */
function dataOf(node: BlockNode) {
  return async () =>
    (await node.blockStatus(0, node.size)).reduce((sum, e) => sum + (e.data ? e.length : 0), 0);
}

const SUBJECTS: Subject[] = [
  {
    name: "memory",
    now: true,
    knowsData: true,
    open: (_dir, readOnly) => {
      const node = new MemoryNode(SIZE, { readOnly });
      return Promise.resolve({ node, allocatedBytes: dataOf(node) });
    },
  },
  {
    name: "file",
    now: true,
    knowsData: true,
    open: async (dir, readOnly) => {
      const path = await fileOf(dir);
      const node = await FileNode.open(path, { readOnly, discard: "unmap" });
      return { node, allocatedBytes: blocksOf(path) };
    },
  },
  {
    name: "file, cache=none",
    now: false,
    knowsData: true,
    open: async (dir, readOnly) => {
      const path = await fileOf(dir);
      const node = await FileNode.open(path, { readOnly, discard: "unmap", direct: true });
      return { node, allocatedBytes: blocksOf(path) };
    },
  },
  {
    name: "raw over file",
    now: true,
    knowsData: true,
    open: async (dir, readOnly) => {
      const path = await fileOf(dir);
      const file = await FileNode.open(path, { readOnly, discard: "unmap" });
      const node = RawNode.open(file, { discard: "unmap", ownsChild: true });
      return { node, allocatedBytes: blocksOf(path) };
    },
  },
  {
    name: "qcow2 over file",
    now: true,
    knowsData: true,
    open: async (dir, readOnly) => {
      const path = `${dir}/disk.qcow2`;
      await Deno.writeFile(path, new Uint8Array(0));
      const created = await FileNode.open(path, { growable: true });
      await createQcow2(created, { size: SIZE });
      await created.close();
      const file = await FileNode.open(path, { readOnly, discard: "unmap", growable: true });
      const image = await Qcow2Node.open(file, { readOnly, discard: "unmap" });
      // The qcow2 node leaves its file open, as the daemon closes each node itself.
      return { node: image, allocatedBytes: blocksOf(path), closeChildren: () => file.close() };
    },
  },
];

/** Open `subject` in a fresh directory, run `body`, close and clean up. */
async function withSubject(
  subject: Subject,
  readOnly: boolean,
  body: (opened: Opened) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "denbd-contract-" });
  try {
    const opened = await subject.open(dir, readOnly);
    try {
      await body(opened);
    } finally {
      await opened.node.close();
      await opened.closeChildren?.();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function pattern(length: number): Uint8Array {
  return new Uint8Array(length).map((_, i) => (i % 251) + 1);
}

for (const subject of SUBJECTS) {
  Deno.test(`node contract (${subject.name}): zeroing deallocates only with mayTrim`, async () => {
    await withSubject(subject, false, async ({ node, allocatedBytes }) => {
      const data = pattern(SIZE);
      await node.write(0, data);
      await node.flush();
      const full = await allocatedBytes();
      assert.ok(full >= SIZE, "written data is allocated");
      await node.writeZeroes(0, CHUNK);
      await node.writeZeroes(CHUNK, CHUNK, { mayTrim: false });
      assert.equal(await allocatedBytes(), full, "zeroing without mayTrim keeps the storage");
      await node.writeZeroes(2 * CHUNK, CHUNK, { mayTrim: true });
      assert.ok(await allocatedBytes() <= full - CHUNK, "zeroing with mayTrim frees it");
      const back = new Uint8Array(SIZE);
      await node.read(0, back);
      assert.ok(back.subarray(0, 3 * CHUNK).every((byte) => byte === 0), "zeroed ranges read 0");
      assert.deepEqual(back.subarray(3 * CHUNK), data.subarray(3 * CHUNK));
      assert.deepEqual(await node.blockStatus(2 * CHUNK, CHUNK), [
        { length: CHUNK, data: false, zero: true, allocated: true },
      ]);
    });
  });

  Deno.test(`node contract (${subject.name}): the at-once paths agree with the others`, async () => {
    await withSubject(subject, false, async ({ node }) => {
      const page = pattern(4096);
      // Whole-page writes over stored data are done at once where the node can.
      await node.write(CHUNK, new Uint8Array(4096).fill(1));
      assert.equal(node.writeNow(CHUNK, page), subject.now);
      if (!subject.now) await node.write(CHUNK, page);
      assert.equal(node.writeNow(0, page, { fua: true }), subject.name === "memory", "FUA syncs");
      // Every byte of the target is written, zeroes included: buffers are reused unwiped.
      const stale = () => new Uint8Array(8192).fill(0xee);
      const back = stale();
      assert.equal(node.readNow(CHUNK - 4096, back), subject.now);
      if (!subject.now) await node.read(CHUNK - 4096, back);
      assert.ok(back.subarray(0, 4096).every((byte) => byte === 0), "a hole reads as zeroes");
      assert.deepEqual(back.subarray(4096), page);
      const viaRead = stale();
      await node.read(CHUNK - 4096, viaRead);
      assert.deepEqual(viaRead, back);
      // Data known at once is data for block status too; a zeroed range is no longer known.
      if (node.holdsDataNow(CHUNK, 4096)) {
        assert.equal((await node.blockStatus(CHUNK, 4096))[0].data, true);
      }
      assert.equal(node.holdsDataNow(CHUNK, 4096), subject.knowsData);
      await node.writeZeroes(CHUNK, CHUNK, { mayTrim: true });
      assert.equal(node.holdsDataNow(CHUNK, 4096), false, "zeroed: not known as data");
      // Out of range or invalid: false, never a throw; the asynchronous call reports it.
      for (const [offset, length] of [[-1, 1], [0.5, 1], [SIZE - 1, 2]]) {
        assert.equal(node.readNow(offset, new Uint8Array(length)), false);
        assert.equal(node.writeNow(offset, new Uint8Array(length)), false);
        assert.equal(node.holdsDataNow(offset, length), false);
      }
    });
  });

  Deno.test(`node contract (${subject.name}): read-only refuses changes`, async () => {
    await withSubject(subject, true, async ({ node }) => {
      assert.equal(node.capabilities.writable, false);
      await assert.rejects(() => node.write(0, new Uint8Array(1)), { kind: "read-only" });
      await assert.rejects(() => node.writeZeroes(0, 512), { kind: "read-only" });
      await assert.rejects(() => node.trim(0, 512), { kind: "read-only" });
      assert.equal(node.writeNow(0, new Uint8Array(4096)), false);
      const back = new Uint8Array(512);
      await node.read(0, back);
      assert.ok(back.every((byte) => byte === 0));
    });
  });

  Deno.test(`node contract (${subject.name}): ranges are checked before the node acts`, async () => {
    await withSubject(subject, false, async ({ node, allocatedBytes }) => {
      const before = await allocatedBytes();
      for (const [offset, length] of [[-1, 1], [0.5, 1], [0, -1], [Number.MAX_SAFE_INTEGER, 2]]) {
        await assert.rejects(() => node.writeZeroes(offset, length), { kind: "invalid" });
        await assert.rejects(() => node.trim(offset, length), { kind: "invalid" });
        await assert.rejects(() => node.cache(offset, length), { kind: "invalid" });
        await assert.rejects(() => node.blockStatus(offset, length), { kind: "invalid" });
      }
      await assert.rejects(() => node.write(SIZE - 1, new Uint8Array(2)), { kind: "no-space" });
      await assert.rejects(() => node.writeZeroes(SIZE, 1), { kind: "no-space" });
      await assert.rejects(() => node.read(SIZE - 1, new Uint8Array(2)), { kind: "invalid" });
      await assert.rejects(() => node.trim(SIZE - 1, 2), { kind: "invalid" });
      await assert.rejects(() => node.blockStatus(0, SIZE + 1), { kind: "invalid" });
      assert.equal(node.size, SIZE);
      assert.equal(await allocatedBytes(), before, "nothing was written");
      // Empty requests at the end are in range.
      await node.read(SIZE, new Uint8Array(0));
      await node.writeZeroes(SIZE, 0);
      assert.deepEqual(await node.blockStatus(SIZE, 0), []);
    });
  });
}

Deno.test("node contract: a fast zero is refused by a node that cannot zero fast, untouched", async () => {
  const slow = RawNode.open(
    new (class extends MemoryNode {
      override readonly capabilities = { ...new MemoryNode(1).capabilities, fastZero: false };
    })(SIZE),
  );
  await slow.write(0, pattern(SIZE));
  await assert.rejects(() => slow.writeZeroes(0, CHUNK, { fast: true }), {
    kind: "not-supported",
  });
  const back = new Uint8Array(SIZE);
  await slow.read(0, back);
  assert.deepEqual(back, pattern(SIZE));
  await slow.writeZeroes(0, CHUNK);
  await slow.read(0, back);
  assert.ok(back.subarray(0, CHUNK).every((byte) => byte === 0));
});
