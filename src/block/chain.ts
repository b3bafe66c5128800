/**
 * The walk down a backing chain: where the bytes a node does not hold
 * itself come from, and what the whole chain says about a range. Both what
 * an export reports as `base:allocation` (and the holes of its structured
 * reads) and `qemu:allocation-depth` come from this one walk.
 *
 * A node's extents say whether the node holds them (`allocated`). Those it
 * does not hold are read from its backing node: the child in the role
 * `backing` of the node or, through filters ({@linkcode FilterNode}: raw,
 * dirty tracking), of the node under them, as QEMU's
 * bdrv_filter_or_cow_child sees through filters. Bytes past the end of a
 * shorter backing node, and bytes no layer holds, read as zeroes (the former
 * at the depth of the shorter node, as QEMU reports them).
 *
 * Allocation depth is QEMU's: 0 where no layer holds the bytes, 1 where the
 * node itself does, N where its (N-1)th backing node does. A node without a
 * backing chain (a file, memory, raw over them) holds every byte itself, so
 * its depth is 1 everywhere, holes included, as qemu-nbd -A and
 * qemu-storage-daemon report for raw images.
 *
 * Work is bounded per call: an answer stops after
 * {@linkcode MAX_CHAIN_EXTENTS} extents (and wherever a node's own answer
 * stops early); callers ask again from where it ended.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { allocationDepth } from "./chain.ts";
 * import { MemoryNode } from "./memory.ts";
 * assert.deepEqual(await allocationDepth(new MemoryNode(4096), 0, 4096), [
 *   { length: 4096, depth: 1 },
 * ]);
 * ```
 * @module
 */

import { FilterNode } from "./filter.ts";
import type { BlockNode } from "./node.ts";

/** Most extents one walk returns (the caller asks again for the rest). */
export const MAX_CHAIN_EXTENTS = 1024;

/** A run of bytes as the whole chain sees it. */
export interface ChainExtent {
  /** Bytes covered; always > 0. */
  readonly length: number;
  /** The layer holding the bytes: 0 none, 1 the node itself, N its (N-1)th backing node. */
  readonly depth: number;
  /** The bytes are stored in that layer (false for holes and for bytes no layer holds). */
  readonly data: boolean;
  /** The bytes are known to read as zeroes. */
  readonly zero: boolean;
}

/** One run of bytes at the same allocation depth. */
export interface DepthExtent {
  /** Bytes covered; always > 0. */
  readonly length: number;
  /** 0 unallocated, 1 local, N from the (N-1)th backing node. */
  readonly depth: number;
}

/** A node and an offset in it. */
export interface NodePosition {
  /** The node. */
  readonly node: BlockNode;
  /** The offset in it. */
  readonly offset: number;
}

/**
 * Where byte `offset` of `node` is read from when `node` does not hold it:
 * the same byte of its backing child, looking through filters (which may
 * move it, as a raw window does); undefined when there is no backing node.
 */
export function backingAt(node: BlockNode, offset: number): NodePosition | undefined {
  let current = node;
  let at = offset;
  while (true) {
    const backing = current.children.find((child) => child.role === "backing");
    if (backing) return { node: backing.node, offset: at };
    if (!(current instanceof FilterNode)) return undefined;
    at = current.fileOffset(at);
    current = current.file;
  }
}

/**
 * The status of the whole chain from `offset`: at least one extent,
 * together covering at least one byte and at most `length` (> 0) bytes, in
 * order, without gaps, equal neighbours merged.
 */
export async function chainStatus(
  node: BlockNode,
  offset: number,
  length: number,
): Promise<ChainExtent[]> {
  const extents: ChainExtent[] = [];
  await walkLayer(node, offset, length, 1, extents);
  return extents;
}

/** Allocation depths from `offset` (as {@linkcode chainStatus} covers it), equal neighbours merged. */
export async function allocationDepth(
  node: BlockNode,
  offset: number,
  length: number,
): Promise<DepthExtent[]> {
  const depths: DepthExtent[] = [];
  for (const { length: bytes, depth } of await chainStatus(node, offset, length)) {
    const last = depths.at(-1);
    if (last?.depth === depth) depths[depths.length - 1] = { length: last.length + bytes, depth };
    else depths.push({ length: bytes, depth });
  }
  return depths;
}

/**
 * Append the chain's extents for up to `length` bytes of `node` (layer
 * `depth`) from `offset`; returns the bytes covered (at least one).
 */
async function walkLayer(
  node: BlockNode,
  offset: number,
  length: number,
  depth: number,
  out: ChainExtent[],
): Promise<number> {
  let done = 0;
  for (const extent of await node.blockStatus(offset, length)) {
    if (done > 0 && out.length >= MAX_CHAIN_EXTENTS) break;
    if (extent.allocated) {
      push(out, { length: extent.length, depth, data: extent.data, zero: extent.zero });
    } else {
      const covered = await walkBelow(node, offset + done, extent.length, depth, out);
      if (covered < extent.length) return done + covered;
    }
    done += extent.length;
  }
  return done;
}

/**
 * Append the extents of bytes `node` does not hold: its backing node's, or
 * zeroes. Zeroes past the end of a shorter backing node belong to that node
 * (its depth), as QEMU reports them; only bytes without any backing node are
 * at depth 0.
 */
async function walkBelow(
  node: BlockNode,
  offset: number,
  length: number,
  depth: number,
  out: ChainExtent[],
): Promise<number> {
  const backing = backingAt(node, offset);
  const inside = backing ? Math.max(0, Math.min(length, backing.node.size - backing.offset)) : 0;
  if (backing && inside > 0) {
    const covered = await walkLayer(backing.node, backing.offset, inside, depth + 1, out);
    if (covered < inside) return covered;
  }
  if (inside < length) {
    push(out, { length: length - inside, depth: backing ? depth + 1 : 0, data: false, zero: true });
  }
  return length;
}

function push(out: ChainExtent[], extent: ChainExtent): void {
  const last = out.at(-1);
  if (
    last && last.depth === extent.depth && last.data === extent.data && last.zero === extent.zero
  ) {
    out[out.length - 1] = { ...last, length: last.length + extent.length };
  } else {
    out.push(extent);
  }
}
