import assert from "node:assert/strict";
import { RawNode } from "../../src/block/raw.ts";
import { MemoryNode } from "../../src/block/memory.ts";
import type { DenbdError } from "../../src/errors.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** A memory node that records the trims and zeroing options it receives. */
class RecordingNode extends MemoryNode {
  trims: [number, number][] = [];
  zeroes: { offset: number; mayTrim?: boolean }[] = [];
  override trim(offset: number, length: number): Promise<void> {
    this.trims.push([offset, length]);
    return super.trim(offset, length);
  }
  override writeZeroes(
    offset: number,
    length: number,
    options: { mayTrim?: boolean } = {},
  ): Promise<void> {
    this.zeroes.push({ offset, mayTrim: options.mayTrim });
    return super.writeZeroes(offset, length, options);
  }
}

Deno.test("raw node: passes everything through by default", async () => {
  const file = new MemoryNode(MiB);
  const raw = RawNode.open(file);
  assert.equal(raw.size, MiB);
  assert.equal(raw.offset, 0);
  assert.deepEqual(raw.capabilities, { ...file.capabilities, trim: false });
  await raw.write(5, new Uint8Array([1, 2, 3]));
  const back = new Uint8Array(3);
  await file.read(5, back);
  assert.deepEqual([...back], [1, 2, 3]);
  assert.deepEqual(await raw.blockStatus(0, MiB), await file.blockStatus(0, MiB));
  await raw.flush();
  await raw.cache(0, 512);
  await raw.close();
  // The child is not the raw node's to close unless it owns it.
  await file.read(0, back);
});

Deno.test("raw node: offset and size select a window of the child", async () => {
  const file = new MemoryNode(8 * MiB);
  const raw = RawNode.open(file, { offset: MiB, size: 2 * MiB });
  assert.equal(raw.size, 2 * MiB);
  await raw.write(0, new Uint8Array([9]));
  await raw.write(2 * MiB - 1, new Uint8Array([8]));
  const byte = new Uint8Array(1);
  await file.read(MiB, byte);
  assert.equal(byte[0], 9);
  await file.read(3 * MiB - 1, byte);
  assert.equal(byte[0], 8);
  await raw.read(2 * MiB - 1, byte);
  assert.equal(byte[0], 8);
  const status = await raw.blockStatus(0, 2 * MiB);
  assert.equal(status.reduce((sum, e) => sum + e.length, 0), 2 * MiB);
  assert.deepEqual(status[0], { length: 64 * KiB, data: true, zero: false, allocated: true });
  // Without a size, the window runs to the end of the child; any offset is fine.
  assert.equal(RawNode.open(file, { offset: 1000 }).size, 8 * MiB - 1000);
  assert.equal(RawNode.open(file, { offset: 8 * MiB }).size, 0);
});

Deno.test("raw node: QEMU's messages for windows that do not fit", () => {
  const file = new MemoryNode(8 * MiB);
  const message = (options: { offset?: number; size?: number }) => {
    try {
      RawNode.open(file, options);
      return "";
    } catch (error) {
      return (error as Error).message;
    }
  };
  assert.equal(message({ size: 1000 }), "Specified size is not multiple of 512");
  assert.equal(
    message({ offset: 8 * MiB + 1 }),
    "Offset (8388609) cannot be greater than size of the containing file (8388608)",
  );
  assert.equal(
    message({ offset: 8 * MiB + 1, size: 512 }),
    "Offset (8388609) cannot be greater than size of the containing file (8388608)",
  );
  assert.equal(
    message({ size: 9000000 }),
    "The sum of offset (0) and size (9000000) has to be smaller or equal to the  actual size " +
      "of the containing file (8388608)",
  );
  assert.equal(
    message({ offset: 7 * MiB, size: 2097000 }),
    "The sum of offset (7340032) and size (2097000) has to be smaller or equal to the  actual " +
      "size of the containing file (8388608)",
  );
  assert.equal(message({ offset: 1000, size: 8 * MiB - 1024 }), "");
});

Deno.test("raw node: discard=ignore drops discards; zeroing unmaps where the child discards", async () => {
  const file = new RecordingNode(MiB);
  assert.equal(file.capabilities.trim, true);
  const ignoring = RawNode.open(file);
  await ignoring.trim(0, 4096);
  await ignoring.writeZeroes(0, 4096, { mayTrim: true });
  assert.deepEqual(file.trims, []);
  assert.deepEqual(file.zeroes, [{ offset: 0, mayTrim: true }]);

  const unmapping = RawNode.open(file, { offset: 512, discard: "unmap" });
  assert.equal(unmapping.capabilities.trim, true);
  await unmapping.trim(0, 4096);
  await unmapping.writeZeroes(0, 4096, { mayTrim: true });
  assert.deepEqual(file.trims, [[512, 4096]]);
  assert.deepEqual(file.zeroes.at(-1), { offset: 512, mayTrim: true });
});

Deno.test("raw node: zeroing never unmaps in a child that does not discard", async () => {
  const file = new RecordingNode(MiB);
  Object.defineProperty(file, "capabilities", { value: { ...file.capabilities, trim: false } });
  for (const discard of ["ignore", "unmap"] as const) {
    await RawNode.open(file, { discard }).writeZeroes(0, 4096, { mayTrim: true });
    assert.deepEqual(file.zeroes.at(-1), { offset: 0, mayTrim: false });
  }
});

Deno.test("raw node: read-only over a writable child, and over a read-only one", async () => {
  const file = new MemoryNode(MiB);
  for (
    const raw of [
      RawNode.open(file, { readOnly: true }),
      RawNode.open(new MemoryNode(MiB, { readOnly: true })),
    ]
  ) {
    assert.equal(raw.capabilities.writable, false);
    await assert.rejects(() => raw.write(0, new Uint8Array(1)), { kind: "read-only" });
    await assert.rejects(() => raw.writeZeroes(0, 1), { kind: "read-only" });
    await assert.rejects(() => raw.trim(0, 1), { kind: "read-only" });
  }
});

Deno.test("raw node: an owned child is closed with it", async () => {
  let closed = 0;
  const child = new MemoryNode(MiB);
  child.close = () => {
    closed++;
    return Promise.resolve();
  };
  await RawNode.open(child).close();
  assert.equal(closed, 0);
  await RawNode.open(child, { ownsChild: true }).close();
  assert.equal(closed, 1);
});

/** Block 0 of a qcow2 image (magic "QFI\xfb", version 3) pointing at a backing file. */
function qcow2Header(): Uint8Array {
  const block = new Uint8Array(512);
  block.set([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3]);
  block.set(new TextEncoder().encode("/etc/shadow"), 0x100);
  return block;
}

Deno.test("probed raw node: a write making block 0 another format is refused", async () => {
  const file = new MemoryNode(MiB);
  const raw = RawNode.open(file, { probed: true });
  await assert.rejects(raw.write(0, qcow2Header()), (error: DenbdError) => {
    assert.equal(error.kind, "read-only"); // EPERM over NBD, as qemu-nbd answers
    assert.match(error.message, /look like qcow2/);
    return true;
  });
  // Also when the request spans more than block 0.
  const long = new Uint8Array(4096);
  long.set(qcow2Header());
  await assert.rejects(raw.write(0, long), /look like qcow2/);
  const back = new Uint8Array(8);
  await file.read(0, back);
  assert.deepEqual([...back], [0, 0, 0, 0, 0, 0, 0, 0], "nothing was written");
  // Ordinary data in block 0, and anything past it, is written.
  await raw.write(0, new Uint8Array(512).fill(7));
  await raw.write(512, qcow2Header());
  await file.read(0, back);
  assert.deepEqual([...back], [7, 7, 7, 7, 7, 7, 7, 7]);
});

Deno.test("probed raw node: a partial write is checked with the bytes around it", async () => {
  const file = new MemoryNode(MiB);
  const raw = RawNode.open(file, { probed: true });
  // The magic alone (version 0) still probes as raw...
  await raw.write(0, new Uint8Array([0x51, 0x46, 0x49, 0xfb]));
  // ...but a version written next to it would complete a qcow2 header.
  await assert.rejects(raw.write(4, new Uint8Array([0, 0, 0, 3])), /look like qcow2/);
  // Two halves raced against each other: one of them must be refused.
  const file2 = new MemoryNode(MiB);
  const raced = RawNode.open(file2, { probed: true });
  const results = await Promise.allSettled([
    raced.write(0, new Uint8Array([0x51, 0x46, 0x49, 0xfb])),
    raced.write(4, new Uint8Array([0, 0, 0, 3])),
  ]);
  assert.deepEqual(results.map((result) => result.status).sort(), ["fulfilled", "rejected"]);
});

Deno.test("probed raw node: zeroing and discards of block 0 are checked too", async () => {
  const file = new MemoryNode(MiB);
  const raw = RawNode.open(file, { probed: true, discard: "unmap" });
  // A parallels header whose version (byte 16, little-endian 2) has a stray high byte.
  const block = new Uint8Array(512);
  block.set(new TextEncoder().encode("WithoutFreeSpace"));
  block.set([2, 0, 0, 1], 16);
  await raw.write(0, block);
  await assert.rejects(raw.writeZeroes(19, 1), /look like parallels/);
  await assert.rejects(raw.trim(19, 1), /look like parallels/);
  await raw.writeZeroes(0, 4096); // all zeroes: still raw
});

Deno.test("raw node: without probed (format named), block 0 takes any content", async () => {
  const file = new MemoryNode(MiB);
  await RawNode.open(file).write(0, qcow2Header());
  const back = new Uint8Array(4);
  await file.read(0, back);
  assert.deepEqual([...back], [0x51, 0x46, 0x49, 0xfb]);
});
