import assert from "node:assert/strict";
import {
  allocationDepth,
  backingAt,
  chainStatus,
  MAX_CHAIN_EXTENTS,
} from "../../src/block/chain.ts";
import { MemoryNode } from "../../src/block/memory.ts";
import { RawNode } from "../../src/block/raw.ts";
import { DirtyTrackingNode } from "../../src/block/dirty-tracking.ts";
import { FileNode } from "../../src/block/file.ts";
import type { BlockNode } from "../../src/block/node.ts";
import { LayeredNode } from "./layered_node.ts";

const C = 64 * 1024;

/**
 * base (4 chunks, data in chunk 0) <- mid (5 chunks, writes chunk 2) <- top
 * (5 chunks, writes chunk 1): chunk 3 reads base's hole, chunk 4 lies past
 * base's end.
 */
async function threeLayers(): Promise<{ base: MemoryNode; mid: LayeredNode; top: LayeredNode }> {
  const base = new MemoryNode(4 * C);
  await base.write(0, new Uint8Array(C).fill(1));
  const mid = new LayeredNode(5 * C, base);
  await mid.write(2 * C, new Uint8Array(C).fill(2));
  const top = new LayeredNode(5 * C, mid);
  await top.write(C, new Uint8Array(C).fill(3));
  return { base, mid, top };
}

async function drain(
  walk: (offset: number, length: number) => Promise<{ length: number }[]>,
  offset: number,
  length: number,
): Promise<number> {
  let calls = 0;
  for (let done = 0; done < length; calls++) {
    const extents = await walk(offset + done, length - done);
    assert.ok(extents.length > 0 && extents.length <= MAX_CHAIN_EXTENTS);
    const covered = extents.reduce((sum, extent) => sum + extent.length, 0);
    assert.ok(covered > 0 && covered <= length - done);
    done += covered;
  }
  return calls;
}

Deno.test("chain: a node without backing is its own status, at depth 1 everywhere", async () => {
  const node = new MemoryNode(4 * C);
  await node.write(C, new Uint8Array(10));
  const own = await node.blockStatus(0, 4 * C);
  const chain = await chainStatus(node, 0, 4 * C);
  assert.deepEqual(
    chain,
    own.map(({ length, data, zero }) => ({ length, depth: 1, data, zero })),
  );
  assert.deepEqual(await allocationDepth(node, 0, 4 * C), [{ length: 4 * C, depth: 1 }]);
  assert.equal(backingAt(node, 0), undefined);
  assert.equal(backingAt(RawNode.open(node, { offset: C }), 0), undefined);
});

Deno.test("chain: unallocated bytes come from the backing chain, zero past a shorter backing", async () => {
  const { base, mid, top } = await threeLayers();
  // Past the end of the shorter base, the zeroes are the base's (depth 3), as QEMU reports them.
  assert.deepEqual(await chainStatus(top, 0, 5 * C), [
    { length: C, depth: 3, data: true, zero: false },
    { length: C, depth: 1, data: true, zero: false },
    { length: C, depth: 2, data: true, zero: false },
    { length: 2 * C, depth: 3, data: false, zero: true },
  ]);
  assert.deepEqual(await allocationDepth(top, 0, 5 * C), [
    { length: C, depth: 3 },
    { length: C, depth: 1 },
    { length: C, depth: 2 },
    { length: 2 * C, depth: 3 },
  ]);
  // The reads agree with what the walk says.
  const bytes = new Uint8Array(5 * C);
  await top.read(0, bytes);
  assert.deepEqual([0, 1, 2, 3, 4].map((chunk) => bytes[chunk * C]), [1, 3, 2, 0, 0]);
  assert.deepEqual(backingAt(top, 7), { node: mid, offset: 7 });
  assert.deepEqual(backingAt(mid, 7), { node: base, offset: 7 });
  // Without a backing node, what the top does not hold reads as zeroes at depth 0.
  const alone = new LayeredNode(2 * C, undefined);
  await alone.write(C, new Uint8Array(1));
  assert.deepEqual(await chainStatus(alone, 0, 2 * C), [
    { length: C, depth: 0, data: false, zero: true },
    { length: 512, depth: 1, data: true, zero: false },
    { length: C - 512, depth: 0, data: false, zero: true },
  ]);
});

Deno.test("chain: filters are seen through, a raw window moving the offsets", async () => {
  const { mid, top } = await threeLayers();
  const filtered: BlockNode = new DirtyTrackingNode(RawNode.open(top, { offset: C, size: 3 * C }));
  assert.deepEqual(backingAt(filtered, 10), { node: mid, offset: C + 10 });
  assert.deepEqual(await allocationDepth(filtered, 0, 3 * C), [
    { length: C, depth: 1 },
    { length: C, depth: 2 },
    { length: C, depth: 3 },
  ]);
  assert.deepEqual(await chainStatus(filtered, C / 2, C), [
    { length: C / 2, depth: 1, data: true, zero: false },
    { length: C / 2, depth: 2, data: true, zero: false },
  ]);
});

Deno.test("chain: one walk is bounded, and asking again covers the rest", async () => {
  const granule = 512;
  const extents = 4 * MAX_CHAIN_EXTENTS;
  const backing = new MemoryNode(extents * granule);
  await backing.write(0, new Uint8Array(extents * granule).fill(9));
  const top = new LayeredNode(extents * granule, backing, granule);
  for (let index = 0; index < extents; index += 2) {
    await top.write(index * granule, new Uint8Array(granule));
  }
  const first = await allocationDepth(top, 0, extents * granule);
  assert.equal(first.length, MAX_CHAIN_EXTENTS);
  assert.deepEqual(first.slice(0, 2), [
    { length: granule, depth: 1 },
    { length: granule, depth: 2 },
  ]);
  const calls = await drain((o, l) => chainStatus(top, o, l), 0, extents * granule);
  assert.equal(calls, 4);
});

Deno.test("chain: a file node's status passes through unchanged", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/disk.img`;
    await Deno.writeFile(path, new Uint8Array(0));
    await Deno.truncate(path, 4 * C);
    const file = await FileNode.open(path, { discard: "unmap" });
    try {
      await file.write(2 * C, new Uint8Array(C).fill(1));
      const raw = RawNode.open(file);
      const own = await file.blockStatus(0, 4 * C);
      assert.deepEqual(
        await chainStatus(raw, 0, 4 * C),
        own.map(({ length, data, zero }) => ({ length, depth: 1, data, zero })),
      );
      assert.deepEqual(await allocationDepth(raw, 0, 4 * C), [{ length: 4 * C, depth: 1 }]);
    } finally {
      await file.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
