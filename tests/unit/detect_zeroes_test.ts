import assert from "node:assert/strict";
import { DetectZeroesNode, isAllZeroes } from "../../src/block/detect-zeroes.ts";
import { MemoryNode } from "../../src/block/memory.ts";
import type { WriteOptions, ZeroOptions } from "../../src/block/node.ts";

/** A memory node that records which requests reached it. */
class RecordingNode extends MemoryNode {
  calls: string[] = [];
  override write(offset: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    this.calls.push(`write ${offset}+${data.length} fua=${Boolean(options?.fua)}`);
    return super.write(offset, data, options);
  }
  override writeZeroes(offset: number, length: number, options?: ZeroOptions): Promise<void> {
    this.calls.push(
      `zero ${offset}+${length} fua=${Boolean(options?.fua)} mayTrim=${Boolean(options?.mayTrim)}`,
    );
    return super.writeZeroes(offset, length, options);
  }
}

Deno.test("isAllZeroes: every byte is looked at, aligned or not", () => {
  const buffer = new Uint8Array(100);
  for (const [start, end] of [[0, 100], [1, 99], [3, 20], [5, 6], [0, 0]]) {
    assert.equal(isAllZeroes(buffer.subarray(start, end)), true);
  }
  for (let at = 0; at < 100; at++) {
    buffer[at] = 1;
    assert.equal(isAllZeroes(buffer.subarray(0, 100)), false, `byte ${at}`);
    assert.equal(isAllZeroes(buffer.subarray(at, at + 1)), false, `byte ${at} alone`);
    assert.equal(isAllZeroes(buffer.subarray(Math.max(0, at - 9), at)), true, `before ${at}`);
    buffer[at] = 0;
  }
});

for (const mode of ["on", "unmap"] as const) {
  Deno.test(`detect-zeroes=${mode}: a zero write becomes write-zeroes, other writes pass`, async () => {
    const inner = new RecordingNode(1 << 20);
    const node = new DetectZeroesNode(inner, mode);
    await node.write(4096, new Uint8Array(8192), { fua: true });
    const data = new Uint8Array(512);
    data[511] = 7;
    await node.write(0, data);
    await node.writeZeroes(65536, 512);
    assert.deepEqual(inner.calls, [
      `zero 4096+8192 fua=true mayTrim=${mode === "unmap"}`,
      "write 0+512 fua=false",
      "zero 65536+512 fua=false mayTrim=false",
    ]);
    const back = new Uint8Array(512);
    await node.read(0, back);
    assert.deepEqual(back, data);
    assert.deepEqual(node.children, [{ role: "file", node: inner }]);
    assert.equal(node.size, inner.size);
    await node.close();
  });
}

Deno.test("detect-zeroes=unmap on a node that deallocates leaves a hole", async () => {
  const inner = new MemoryNode(1 << 20);
  await inner.write(0, new Uint8Array(65536).fill(1));
  const node = new DetectZeroesNode(inner, "unmap");
  await node.write(0, new Uint8Array(65536));
  const [extent] = await node.blockStatus(0, 65536);
  assert.equal(extent.length, 65536);
  assert.equal(extent.zero, true);
  assert.equal(extent.data, false);
  await node.close();
});
