import assert from "node:assert/strict";
import { DirtyTrackingNode } from "../../src/block/dirty-tracking.ts";
import { MemoryNode } from "../../src/block/memory.ts";
import { RawNode } from "../../src/block/raw.ts";
import { FileNode } from "../../src/block/file.ts";
import { allocationDepth } from "../../src/block/chain.ts";
import { DenbdError } from "../../src/errors.ts";
import type { NodeCapabilities, ZeroOptions } from "../../src/block/node.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

function runs(node: DirtyTrackingNode, name: string) {
  return node.bitmaps.find(name)!.dirtyExtents(0, node.size).map((e) => [e.length, e.dirty]);
}

/** A memory node whose capabilities can be narrowed and whose zeroing can be made to fail. */
class ShapedNode extends MemoryNode {
  override readonly capabilities: NodeCapabilities;
  failZeroes = false;
  constructor(size: number, changes: Partial<NodeCapabilities> = {}) {
    super(size);
    this.capabilities = { ...new MemoryNode(1).capabilities, ...changes };
  }
  override writeZeroes(offset: number, length: number, options?: ZeroOptions): Promise<void> {
    if (this.failZeroes) return Promise.reject(new DenbdError("not-supported", "not fast"));
    return super.writeZeroes(offset, length, options);
  }
}

Deno.test("dirty tracking: write, write-zeroes and trim mark every enabled bitmap", async () => {
  const node = new DirtyTrackingNode(new MemoryNode(4 * MiB));
  node.bitmaps.create("b0");
  node.bitmaps.create("fine", { granularity: 512 });
  node.bitmaps.create("off", { disabled: true });
  await node.write(100 * KiB, new Uint8Array(1));
  await node.writeZeroes(MiB, 4 * KiB, { mayTrim: true });
  await node.trim(3100 * KiB, 200 * KiB);
  assert.deepEqual(runs(node, "b0"), [
    [64 * KiB, false],
    [64 * KiB, true],
    [MiB - 128 * KiB, false],
    [64 * KiB, true],
    [3072 * KiB - MiB - 64 * KiB, false],
    [256 * KiB, true],
    [4 * MiB - 3328 * KiB, false],
  ]);
  assert.equal(node.bitmaps.find("fine")!.count, 512 + 4 * KiB + 200 * KiB);
  assert.equal(node.bitmaps.find("off")!.count, 0);
  // Reads, flushes, cache hints and block status change nothing.
  await node.read(0, new Uint8Array(MiB));
  await node.flush();
  await node.cache(0, MiB);
  await node.blockStatus(0, MiB);
  assert.equal(node.bitmaps.find("b0")!.count, 6 * 64 * KiB);
});

Deno.test("dirty tracking: ignored discards and read-only nodes mark nothing", async () => {
  const ignoring = new DirtyTrackingNode(new ShapedNode(MiB, { trim: false }));
  ignoring.bitmaps.create("b");
  await ignoring.trim(0, MiB);
  assert.equal(ignoring.bitmaps.find("b")!.count, 0);

  const readOnly = new DirtyTrackingNode(new MemoryNode(MiB, { readOnly: true }));
  readOnly.bitmaps.create("b");
  await assert.rejects(() => readOnly.write(0, new Uint8Array(1)), { kind: "read-only" });
  await assert.rejects(() => readOnly.writeZeroes(0, 512), { kind: "read-only" });
  await assert.rejects(() => readOnly.trim(0, 512), { kind: "read-only" });
  assert.equal(readOnly.bitmaps.find("b")!.count, 0);
});

Deno.test("dirty tracking: a failed (or refused fast) zeroing still marks, as QEMU does", async () => {
  const inner = new ShapedNode(MiB);
  const node = new DirtyTrackingNode(inner);
  node.bitmaps.create("b");
  inner.failZeroes = true;
  await assert.rejects(() => node.writeZeroes(0, 1, { fast: true }), { kind: "not-supported" });
  assert.equal(node.bitmaps.find("b")!.count, 64 * KiB);
});

Deno.test("dirty tracking: writes through a raw node mark both nodes, each in its own offsets", async () => {
  const file = new DirtyTrackingNode(new MemoryNode(8 * MiB));
  const raw = new DirtyTrackingNode(
    RawNode.open(file, { offset: MiB, size: 2 * MiB, discard: "unmap" }),
  );
  file.bitmaps.create("y", { granularity: 512 });
  raw.bitmaps.create("x");
  await raw.write(0, new Uint8Array(1));
  await raw.write(2 * MiB - 1, new Uint8Array(1));
  await raw.trim(64 * KiB, 512);
  assert.deepEqual(runs(raw, "x"), [
    [128 * KiB, true],
    [2 * MiB - 192 * KiB, false],
    [64 * KiB, true],
  ]);
  assert.deepEqual(runs(file, "y"), [
    [MiB, false],
    [512, true],
    [64 * KiB - 512, false],
    [512, true],
    [2 * MiB - 64 * KiB - 1024, false],
    [512, true],
    [5 * MiB, false],
  ]);
  // A write straight to the file node marks only the file's bitmaps.
  await file.write(0, new Uint8Array(1));
  assert.equal(raw.bitmaps.find("x")!.count, 3 * 64 * KiB);
  assert.equal(file.bitmaps.find("y")!.count, 4 * 512);
});

Deno.test("dirty tracking: size, capabilities, data and allocation depth come from the inner node", async () => {
  const inner = new MemoryNode(MiB);
  const node = new DirtyTrackingNode(inner);
  assert.equal(node.size, MiB);
  assert.equal(node.capabilities, inner.capabilities);
  assert.equal(node.requestAlignment, 1);
  await node.write(10, new Uint8Array([7, 8]));
  const back = new Uint8Array(2);
  await inner.read(10, back);
  assert.deepEqual([...back], [7, 8]);
  assert.deepEqual(await allocationDepth(node, 0, MiB), [{ length: MiB, depth: 1 }]);
  await node.close();
});

Deno.test("dirty tracking: a file node with discard=ignore marks nothing on trim", async () => {
  const dir = await Deno.makeTempDir({ prefix: "denbd-test-" });
  try {
    const path = `${dir}/d.img`;
    await Deno.writeFile(path, new Uint8Array(MiB));
    for (const discard of ["ignore", "unmap"] as const) {
      const node = new DirtyTrackingNode(await FileNode.open(path, { discard }));
      try {
        node.bitmaps.create("b");
        await node.trim(0, 4096);
        if (node.file.capabilities.trim) {
          assert.equal(node.bitmaps.find("b")!.count, 64 * KiB);
        } else {
          assert.equal(node.bitmaps.find("b")!.count, 0);
        }
        assert.equal(discard === "unmap", node.capabilities.trim);
      } finally {
        await node.close();
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("dirty tracking: a write done at once marks the bitmaps as the other writes do", () => {
  const node = new DirtyTrackingNode(new MemoryNode(4 * MiB));
  node.bitmaps.create("b0");
  node.bitmaps.create("off", { disabled: true });
  assert.equal(node.writeNow(200 * KiB, new Uint8Array(4 * KiB)), true);
  assert.deepEqual(runs(node, "b0"), [[192 * KiB, false], [64 * KiB, true], [3840 * KiB, false]]);
  assert.deepEqual(runs(node, "off"), [[4 * MiB, false]]);
  // Refused at once (past the end): nothing written, nothing marked.
  assert.equal(node.writeNow(4 * MiB - 1, new Uint8Array(2)), false);
  assert.equal(node.bitmaps.find("b0")!.count, 64 * KiB);
});
