/**
 * Allocation depth, as QEMU's `qemu:allocation-depth` metadata context
 * reports it: for each run of bytes, 0 when no layer of the backing chain
 * holds it (it reads from nowhere, as zeroes), 1 when the node itself holds
 * it, N when the (N-1)th backing image does.
 *
 * Nodes that have a backing chain (qcow2, later) implement
 * {@linkcode AllocationDepthSource}; filters and format nodes without their
 * own layers (raw, the dirty-tracking wrapper) forward their child's answer.
 * A protocol node (a file, memory) holds every byte itself, so its depth is 1
 * everywhere, holes included: that is what qemu-nbd -A and
 * qemu-storage-daemon report for raw images.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { allocationDepthOf } from "./allocation-depth.ts";
 * import { MemoryNode } from "./memory.ts";
 * assert.deepEqual(await allocationDepthOf(new MemoryNode(4096), 0, 4096), [
 *   { length: 4096, depth: 1 },
 * ]);
 * ```
 * @module
 */

import type { BlockNode } from "./node.ts";

/** One run of bytes at the same depth. */
export interface DepthExtent {
  /** Bytes covered; always > 0. */
  readonly length: number;
  /** 0 unallocated, 1 local, N from the (N-1)th backing image. */
  readonly depth: number;
}

/** A node that knows where in its backing chain each byte lives. */
export interface AllocationDepthSource {
  /**
   * Depths from `offset`: at least one extent, together covering at least
   * one byte and at most `length` bytes, in order and without gaps.
   */
  allocationDepth(offset: number, length: number): Promise<DepthExtent[]>;
}

/** Whether `node` answers allocation depth itself. */
export function hasAllocationDepth(
  node: BlockNode,
): node is BlockNode & AllocationDepthSource {
  return typeof (node as Partial<AllocationDepthSource>).allocationDepth === "function";
}

/**
 * The allocation depth of `node` from `offset`: the node's own answer when
 * it has one, else 1 for the whole range (a node without layers holds every
 * byte itself).
 */
export function allocationDepthOf(
  node: BlockNode,
  offset: number,
  length: number,
): Promise<DepthExtent[]> {
  if (hasAllocationDepth(node)) return node.allocationDepth(offset, length);
  return Promise.resolve([{ length, depth: 1 }]);
}
