/**
 * Hostile and unsupported qcow2 images, built here by patching images that
 * createQcow2 makes: each is refused with a clear message (QEMU's where
 * QEMU has one), in bounded memory, and nothing is written into a broken
 * image.
 */

import assert from "node:assert/strict";
import { DenbdError } from "../../src/errors.ts";
import { MemoryNode } from "../../src/block/memory.ts";
import type { BlockNode } from "../../src/block/node.ts";
import { createQcow2, Qcow2Node } from "../../src/block/qcow2/qcow2-node.ts";
import { decodeHeader, encodeHeader } from "../../src/block/qcow2/header.ts";

const CLUSTER = 65536;

/** A fresh 1 MiB image in memory, with `patch` applied to its bytes. */
async function image(
  patch: (view: DataView, bytes: Uint8Array) => void = () => {},
  options: { size?: number; clusterSize?: number } = {},
): Promise<MemoryNode> {
  const file = new MemoryNode(0, { growable: true });
  await createQcow2(file, { size: options.size ?? 1 << 20, clusterSize: options.clusterSize });
  const bytes = new Uint8Array(file.size);
  await file.read(0, bytes);
  patch(new DataView(bytes.buffer), bytes);
  await file.write(0, bytes);
  return file;
}

/** An image with one data cluster written at virtual offset 0 (host offsets known from it). */
async function imageWithData(): Promise<{ file: MemoryNode; l2: number; data: number }> {
  const file = await image();
  const node = await Qcow2Node.open(file);
  await node.write(0, new Uint8Array(CLUSTER).fill(9));
  await node.close();
  const header = new Uint8Array(CLUSTER);
  await file.read(0, header);
  const view = new DataView(header.buffer);
  const l1 = Number(view.getBigUint64(40));
  const entry = new Uint8Array(8);
  await file.read(l1, entry);
  const l2 = Number(new DataView(entry.buffer).getBigUint64(0) & 0x00fffffffffffe00n);
  await file.read(l2, entry);
  const data = Number(new DataView(entry.buffer).getBigUint64(0) & 0x00fffffffffffe00n);
  return { file, l2, data };
}

async function setU64At(file: MemoryNode, offset: number, value: bigint): Promise<void> {
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setBigUint64(0, value);
  await file.write(offset, bytes);
}

async function refused(file: MemoryNode, message: string | RegExp, readOnly = false) {
  await assert.rejects(Qcow2Node.open(file, { readOnly }), (error: unknown) => {
    assert.ok(error instanceof DenbdError, String(error));
    if (typeof message === "string") assert.equal(error.message, message);
    else assert.match(error.message, message);
    return true;
  });
}

Deno.test("qcow2 header: refusals with QEMU's messages", async () => {
  const cases: [string, (view: DataView) => void, string | RegExp][] = [
    ["magic", (v) => v.setUint32(0, 0x12345678), "Image is not in qcow2 format"],
    ["version", (v) => v.setUint32(4, 4), "Unsupported qcow2 version 4"],
    ["cluster bits low", (v) => v.setUint32(20, 8), "Unsupported cluster size: 2^8"],
    ["cluster bits high", (v) => v.setUint32(20, 22), "Unsupported cluster size: 2^22"],
    [
      "unknown incompatible feature",
      (v) => v.setBigUint64(72, 1n << 20n),
      "Unsupported qcow2 feature(s): Unknown incompatible feature: 100000",
    ],
    ["encryption method", (v) => v.setUint32(32, 3), "Unsupported encryption method 3"],
    ["AES", (v) => v.setUint32(32, 1), /encrypted images \(AES\) are not supported/],
    ["LUKS", (v) => v.setUint32(32, 2), /encrypted images \(LUKS\) are not supported/],
    ["data file", (v) => v.setBigUint64(72, 4n), /external data file/],
    [
      "refcount order",
      (v) => v.setUint32(96, 7),
      "Reference count entry width too large; may not exceed 64 bits",
    ],
    ["header short", (v) => v.setUint32(100, 100), "qcow2 header too short"],
    ["header long", (v) => v.setUint32(100, 0x20000), "qcow2 header exceeds cluster size"],
    ["huge L1", (v) => v.setUint32(36, 0x10000000), "Active L1 table too large"],
    ["small L1", (v) => v.setUint32(36, 0), "L1 table is too small"],
    ["unaligned L1", (v) => v.setBigUint64(40, 0x30001n), "Active L1 table offset invalid"],
    ["L1 in the header", (v) => v.setBigUint64(40, 0n), "Active L1 table offset invalid"],
    ["L1 past the end", (v) => v.setBigUint64(40, 1n << 40n), /L1 table .* beyond the end/],
    ["refcount table", (v) => v.setBigUint64(48, 7n), "Reference count table offset invalid"],
    ["refcount table size", (v) => v.setUint32(56, 0x1000000), "Reference count table too large"],
    ["size", (v) => v.setBigUint64(24, 1n << 62n), "Image is too big"],
    [
      "compression type without the bit",
      (v) => v.setUint8(104, 1),
      "qcow2: Compression type incompatible feature bit must be set",
    ],
    [
      "compression bit without the type",
      (v) => v.setBigUint64(72, 8n),
      "qcow2: Compression type incompatible feature bit must not be set",
    ],
    ["backing offset", (v) => v.setBigUint64(8, 0x20000n), "Invalid backing file offset"],
    [
      "backing name length",
      (v) => {
        v.setBigUint64(8, 0x1000n);
        v.setUint32(16, 2000);
      },
      "Backing file name too long",
    ],
  ];
  for (const [name, patch, message] of cases) {
    await refused(await image(patch), message).catch((error) => {
      throw new Error(`${name}: ${error.message}`);
    });
  }
});

Deno.test("qcow2 header: a corrupt or dirty image opens read-only only", async () => {
  const corrupt = await image((v) => v.setBigUint64(72, 2n));
  await refused(corrupt, "qcow2: Image is corrupt; cannot be opened read/write");
  const node = await Qcow2Node.open(corrupt, { readOnly: true });
  assert.equal(node.info.corrupt, true);
  assert.equal(node.capabilities.writable, false);
  const dirty = await image((v) => {
    v.setBigUint64(72, 1n);
    v.setBigUint64(80, 1n);
  });
  await refused(dirty, /dirty/);
  await Qcow2Node.open(dirty, { readOnly: true });
});

Deno.test("qcow2 header: extensions and unknown fields survive a rewrite", async () => {
  const file = await image((v, bytes) => {
    // An unknown extension before the end marker, after the feature name table.
    const header = decodeHeader(bytes.subarray(0, CLUSTER));
    const rewritten = encodeHeader({
      ...header,
      extensions: [...header.extensions, { type: 0x12345678, data: new Uint8Array([1, 2, 3]) }],
      autoclearFeatures: 1n << 40n,
    });
    bytes.fill(0, 0, 4096);
    bytes.set(rewritten);
    void v;
  });
  const node = await Qcow2Node.open(file);
  await node.metadata.writeBitmapsExtension(new Uint8Array(24).fill(5), true);
  const cluster0 = new Uint8Array(CLUSTER);
  await file.read(0, cluster0);
  const header = decodeHeader(cluster0);
  assert.deepEqual(
    header.extensions.map((e) => e.type),
    [0x6803f857, 0x12345678, 0x23852875],
  );
  assert.deepEqual([...header.extensions[1].data], [1, 2, 3]);
  // Unknown autoclear bits are cleared by a writer, the bitmaps bit set as asked.
  assert.equal(header.autoclearFeatures, 1n);
  assert.deepEqual(node.metadata.bitmapsExtension, new Uint8Array(24).fill(5));
});

Deno.test("qcow2 tables: an L2 table offset inside the header or past the end", async () => {
  for (const l2 of [512n, 1n << 40n]) {
    const { file } = await imageWithData();
    const header = new Uint8Array(CLUSTER);
    await file.read(0, header);
    const l1 = Number(new DataView(header.buffer).getBigUint64(40));
    await setU64At(file, l1, (1n << 63n) | l2);
    const node = await Qcow2Node.open(file);
    await assert.rejects(node.read(0, new Uint8Array(512)), /image is corrupt: L2 table offset/);
    const before = new Uint8Array(file.size);
    await file.read(0, before);
    await assert.rejects(node.write(0, new Uint8Array(512)), /image is corrupt/);
    await assert.rejects(node.write(CLUSTER * 2, new Uint8Array(512)), /corrupt/);
    const after = new Uint8Array(file.size);
    await file.read(0, after);
    assert.deepEqual(after, before, "nothing was written into the broken image");
  }
});

Deno.test("qcow2 tables: a data cluster inside the header or past the end", async () => {
  for (const data of [0x200n, 1n << 40n]) {
    const { file, l2 } = await imageWithData();
    await setU64At(file, l2, (1n << 63n) | data);
    const node = await Qcow2Node.open(file);
    await assert.rejects(node.read(0, new Uint8Array(512)), /image is corrupt/);
  }
});

Deno.test("qcow2 tables: a compressed cluster with a lying length or offset", async () => {
  const { file, l2, data } = await imageWithData();
  // Compressed, at the data cluster, claiming the largest sector count: the
  // bytes there are not deflate data, and at most two clusters are read.
  const sectorsShift = 62n - (16n - 8n);
  await setU64At(file, l2, (1n << 62n) | (0xffn << sectorsShift) | BigInt(data));
  const node = await Qcow2Node.open(file, { readOnly: true });
  await assert.rejects(node.read(0, new Uint8Array(512)), /bad compressed cluster|decompresses/);
  await setU64At(file, l2, (1n << 62n) | (1n << 40n));
  const again = await Qcow2Node.open(file, { readOnly: true });
  await assert.rejects(again.read(0, new Uint8Array(512)), /image is corrupt: compressed/);
});

Deno.test("qcow2 refcounts: a reference that would drop below zero stops all writes", async () => {
  const { file, data } = await imageWithData();
  // The image says the data cluster at virtual 0 has refcount 0: discarding
  // it would drop the count below zero.
  const header = new Uint8Array(CLUSTER);
  await file.read(0, header);
  const table = Number(new DataView(header.buffer).getBigUint64(48));
  const entry = new Uint8Array(8);
  await file.read(table, entry);
  const block = Number(new DataView(entry.buffer).getBigUint64(0));
  await file.write(block + (data / CLUSTER) * 2, new Uint8Array(2));
  const node = await Qcow2Node.open(file, { discard: "unmap" });
  await assert.rejects(node.trim(0, CLUSTER), /drop below zero/);
  await assert.rejects(node.write(4 * CLUSTER, new Uint8Array(512)), /corrupt/);
});

Deno.test("qcow2 backing: named but no way to open it, or overridden", async () => {
  const file = new MemoryNode(0, { growable: true });
  await createQcow2(file, {
    size: 1 << 20,
    backing: { filename: "base.raw", format: "raw" },
  });
  await refused(file, /has a backing file \(base.raw\) and no way to open it/, true);
  const alone = await Qcow2Node.open(file, { backing: null });
  assert.deepEqual(alone.backingReference, { filename: "base.raw", format: "raw" });
  assert.equal(alone.backing, null);
  const base = new MemoryNode(1 << 19);
  await base.write(0, new Uint8Array([42]));
  const layered = await Qcow2Node.open(file, { openBacking: () => Promise.resolve(base) });
  const into = new Uint8Array(2);
  await layered.read(0, into);
  assert.deepEqual([...into], [42, 0]);
  await layered.read((1 << 19) + 7, into);
  assert.deepEqual([...into], [0, 0], "past the shorter backing file: zeroes");
  assert.deepEqual(layered.children.map((c) => c.role), ["file", "backing"]);
});

/** A node over `inner` whose first read touching `[start, end)` waits for `gate`. */
function gatedReads(inner: MemoryNode, start: number, end: number, gate: Promise<void>): BlockNode {
  let gated = true;
  return {
    get size() {
      return inner.size;
    },
    children: [],
    growable: inner.growable,
    capabilities: inner.capabilities,
    requestAlignment: 1,
    async read(offset, into) {
      if (gated && offset < end && start < offset + into.length) {
        gated = false;
        await gate;
      }
      await inner.read(offset, into);
    },
    readNow: () => false,
    write: (offset, data, options) => inner.write(offset, data, options),
    writeNow: () => false,
    holdsDataNow: () => false,
    writeZeroes: (offset, length, options) => inner.writeZeroes(offset, length, options),
    trim: (offset, length, options) => inner.trim(offset, length, options),
    flush: () => inner.flush(),
    cache: (offset, length) => inner.cache(offset, length),
    blockStatus: (offset, length) => inner.blockStatus(offset, length),
    close: () => inner.close(),
  };
}

Deno.test("qcow2 copy-on-write does not reuse a cluster a read is still reading", async () => {
  const { file, l2, data } = await imageWithData();
  // Cluster 0 loses its COPIED flag: the next write to it copies it and
  // frees the old data cluster (refcount 1 -> 0), which the next
  // allocation would reuse.
  await setU64At(file, l2, BigInt(data));
  const { promise: gate, resolve: open } = Promise.withResolvers<void>();
  const node = await Qcow2Node.open(gatedReads(file, data, data + CLUSTER, gate));
  const into = new Uint8Array(4096);
  const reading = node.read(0, into);
  const writing = (async () => {
    await node.write(8192, new Uint8Array(512).fill(0x33));
    await node.write(5 * CLUSTER, new Uint8Array(CLUSTER).fill(0x22));
  })();
  await new Promise((resolve) => setTimeout(resolve, 50));
  open();
  await Promise.all([reading, writing]);
  assert.ok(into.every((byte) => byte === 9), `read ${into[0]}, not the old data`);
});

Deno.test("qcow2 refcounts: a free cluster that holds metadata is never written", async () => {
  const { file, l2 } = await imageWithData();
  // The image says its only L2 table is free: allocating it for data would
  // overwrite the table.
  const header = new Uint8Array(CLUSTER);
  await file.read(0, header);
  const table = Number(new DataView(header.buffer).getBigUint64(48));
  const entry = new Uint8Array(8);
  await file.read(table, entry);
  const block = Number(new DataView(entry.buffer).getBigUint64(0));
  await file.write(block + (l2 / CLUSTER) * 2, new Uint8Array(2));
  const before = new Uint8Array(file.size);
  await file.read(0, before);
  const node = await Qcow2Node.open(file);
  await assert.rejects(node.write(2 * CLUSTER, new Uint8Array(512).fill(1)), /holds metadata/);
  await assert.rejects(node.write(3 * CLUSTER, new Uint8Array(512)), /corrupt/);
  await node.close();
  const after = new Uint8Array(file.size);
  await file.read(0, after);
  assert.deepEqual(after, before, "nothing was written into the broken image");
});

Deno.test("qcow2 backing: a chain that loops is refused", async () => {
  const a = new MemoryNode(0, { growable: true });
  const b = new MemoryNode(0, { growable: true });
  await createQcow2(a, { size: 1 << 20, backing: { filename: "b", format: "qcow2" } });
  await createQcow2(b, { size: 1 << 20, backing: { filename: "a", format: "qcow2" } });
  const files: Record<string, MemoryNode> = { a, b };
  const open = (file: MemoryNode): Promise<Qcow2Node> =>
    Qcow2Node.open(file, {
      readOnly: true,
      openBacking: (reference) => open(files[reference.filename]),
    });
  await assert.rejects(open(a), /Backing file '[ab]' creates an infinite loop/);
});

Deno.test("qcow2 hostile: a snapshot's L1 table is bounded and checked before it is read", async () => {
  const file = await image();
  const atSnapshot = (l1TableOffset: number, l1Size: number) =>
    Qcow2Node.open(file, { snapshot: { l1TableOffset, l1Size, size: 1 << 20 } });
  // 2^32 - 1 entries would be a 32 GiB table: refused before anything is allocated.
  await assert.rejects(atSnapshot(3 * CLUSTER, 0xffff_ffff), /Snapshot L1 table too large/);
  await assert.rejects(atSnapshot(3 * CLUSTER + 512, 1), /Snapshot L1 table offset invalid/);
  await assert.rejects(atSnapshot(64 * CLUSTER, 1), /Snapshot L1 table offset invalid/);
});
