/**
 * What the qcow2 driver's interop tests share: opening an image file (and
 * its backing chain) as nodes, running qemu-io scripts, and comparing a
 * node's contents and this layer's allocation with what qemu-img says.
 *
 * @module
 */

import assert from "node:assert/strict";
import { dirname, isAbsolute, join } from "node:path";
import { FileNode } from "../../src/block/file.ts";
import type { BlockExtent, BlockNode } from "../../src/block/node.ts";
import { type BackingReference, Qcow2Node } from "../../src/block/qcow2/qcow2-node.ts";
import { check } from "./harness.ts";

/** An opened image with everything it opened below it. */
export interface OpenedImage {
  /** The top node. */
  readonly node: BlockNode;
  /** Close every node that was opened, top first. */
  close(): Promise<void>;
}

/** Open `path` as `format` (qcow2 chains followed through their backing references). */
export async function openImage(
  path: string,
  format: string,
  options: { readOnly?: boolean; discard?: "ignore" | "unmap" } = {},
): Promise<OpenedImage> {
  const opened: BlockNode[] = [];
  const open = async (file: string, fmt: string, top: boolean): Promise<BlockNode> => {
    const readOnly = top ? Boolean(options.readOnly) : true;
    const fileNode = await FileNode.open(file, { readOnly, growable: fmt === "qcow2" });
    opened.push(fileNode);
    if (fmt !== "qcow2") return fileNode;
    const node = await Qcow2Node.open(fileNode, {
      readOnly,
      discard: top ? options.discard : undefined,
      openBacking: (reference: BackingReference) => {
        const name = isAbsolute(reference.filename)
          ? reference.filename
          : join(dirname(file), reference.filename);
        return open(name, reference.format ?? "raw", false);
      },
    });
    opened.push(node);
    return node;
  };
  const node = await open(path, format, true);
  return {
    node,
    close: async () => {
      for (const each of opened.reverse()) await each.close();
    },
  };
}

/** Run qemu-io commands on `path` (format qcow2 unless given). */
export async function qemuIo(
  path: string,
  commands: readonly string[],
  format = "qcow2",
): Promise<void> {
  await check("qemu-io", ["-f", format, ...commands.flatMap((c) => ["-c", c]), path]);
}

/** Every byte of `node`, read in pieces of `chunk` bytes. */
export async function readAll(node: BlockNode, chunk = 1 << 20): Promise<Uint8Array> {
  const all = new Uint8Array(node.size);
  for (let at = 0; at < node.size; at += chunk) {
    await node.read(at, all.subarray(at, Math.min(node.size, at + chunk)));
  }
  return all;
}

/** The bytes qemu-img reads from the image at `path` (converted to raw in `scratch`). */
export async function qemuRead(path: string, scratch: string): Promise<Uint8Array> {
  await check("qemu-img", ["convert", "-O", "raw", path, scratch]);
  return await Deno.readFile(scratch);
}

/** Assert that two byte arrays are equal, naming the first difference. */
export function assertSameBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  const at = actual.findIndex((byte, i) => byte !== expected[i]);
  assert.equal(at, -1, `${what}: first difference at byte ${at}`);
}

/** Every extent of `node` from 0 to its end (asking again where an answer stops). */
export async function allExtents(node: BlockNode): Promise<(BlockExtent & { start: number })[]> {
  const extents: (BlockExtent & { start: number })[] = [];
  for (let at = 0; at < node.size;) {
    for (const extent of await node.blockStatus(at, node.size - at)) {
      extents.push({ ...extent, start: at });
      at += extent.length;
    }
  }
  return extents;
}

interface MapEntry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
}

/**
 * Assert that the node's block status matches `qemu-img map` of the image
 * at `path` for the top layer: allocated exactly where qemu-img says depth 0
 * and present, with the same data and zero flags there.
 */
export async function assertSameMap(node: BlockNode, path: string): Promise<void> {
  const map = JSON.parse(
    await check("qemu-img", ["map", "-U", "--output=json", "-f", "qcow2", path]),
  ) as MapEntry[];
  const extents = await allExtents(node);
  for (const entry of map) {
    const allocated = entry.depth === 0 && entry.present;
    for (const extent of extents) {
      const overlap = extent.start < entry.start + entry.length &&
        entry.start < extent.start + extent.length;
      if (!overlap) continue;
      const where = `${path} at ${Math.max(extent.start, entry.start)}`;
      assert.equal(extent.allocated, allocated, `${where}: allocated`);
      if (!allocated) continue;
      assert.equal(extent.data, entry.data, `${where}: data`);
      assert.equal(extent.zero, entry.zero, `${where}: zero`);
    }
  }
}

/** Assert that the node reads what qemu-img reads and maps as qemu-img maps. */
export async function assertMatchesQemu(
  node: BlockNode,
  path: string,
  scratch: string,
): Promise<void> {
  assertSameBytes(await readAll(node), await qemuRead(path, scratch), path);
  assertSameBytes(
    await readAll(node, 12345),
    await Deno.readFile(scratch),
    `${path} (unaligned reads)`,
  );
  const expected = await Deno.readFile(scratch);
  const readsNow = readAllNow(node, 12345);
  assert.ok(readsNow.done > 0, `${path}: some reads are done at once`);
  for (const [at, bytes] of readsNow.pieces) {
    assertSameBytes(bytes, expected.subarray(at, at + bytes.length), `${path} (at once, ${at})`);
  }
  await assertSameMap(node, path);
}

/**
 * Every piece of `chunk` bytes that `node` reads at once (`readNow`, into
 * buffers of stale bytes), by offset; `done` counts them.
 */
function readAllNow(node: BlockNode, chunk: number) {
  const pieces = new Map<number, Uint8Array>();
  for (let at = 0; at < node.size; at += chunk) {
    const into = new Uint8Array(Math.min(chunk, node.size - at)).fill(0xee);
    if (node.readNow(at, into)) pieces.set(at, into);
  }
  return { pieces, done: pieces.size };
}
