/**
 * QEMU's `qemu:` metadata namespace, as qemu-nbd and qemu-storage-daemon 7.2
 * offer it:
 *
 * - `qemu:allocation-depth` (when the export enables it): each extent's
 *   flags are its depth in the backing chain (0 unallocated, 1 local, N the
 *   (N-1)th backing image).
 * - `qemu:dirty-bitmap:NAME` for each bitmap the export was given: bit 0
 *   (NBD_STATE_DIRTY) set on extents in dirty granules.
 *
 * LIST_META_CONTEXT understands "qemu:" (everything), "qemu:dirty-bitmap:"
 * (every bitmap) and exact names, and lists in QEMU's order: allocation
 * depth, then the bitmaps in the order the export was given them. Any
 * other leaf ("qemu:allocation-depth:", "qemu:dirty-bitmap", "qemu:x")
 * matches nothing. SET_META_CONTEXT selects exact names only.
 *
 * @example
 * ```ts
 * import { qemuNamespace } from "./qemu-namespace.ts";
 * import { NbdExport } from "./export.ts";
 * import { MemoryNode } from "../../block/memory.ts";
 * const node = new MemoryNode(1 << 20);
 * const entry = new NbdExport({
 *   name: "disk",
 *   node,
 *   extraNamespaces: [qemuNamespace({ allocationDepth: node })],
 * });
 * ```
 * @module
 */

import { allocationDepth } from "../../block/chain.ts";
import type { DirtyBitmap } from "../../block/dirty-bitmap.ts";
import type { BlockNode } from "../../block/node.ts";
import type { StatusDescriptor } from "../wire.ts";
import {
  collectDescriptors,
  type MetaContext,
  type MetaContextNamespace,
  pushDescriptor,
} from "./meta-context.ts";

/** The namespace, without its colon. */
export const QEMU_NAMESPACE = "qemu";
/** The allocation depth context. */
export const ALLOCATION_DEPTH_CONTEXT = "qemu:allocation-depth";
/** Dirty bitmap contexts are this prefix followed by the bitmap's name. */
export const DIRTY_BITMAP_PREFIX = "qemu:dirty-bitmap:";
/** Flag of a dirty extent in a dirty bitmap context. */
export const NBD_STATE_DIRTY = 1;

const DEPTH_LEAF = ALLOCATION_DEPTH_CONTEXT.slice(QEMU_NAMESPACE.length + 1);
const BITMAP_LEAF = DIRTY_BITMAP_PREFIX.slice(QEMU_NAMESPACE.length + 1);

/** What a dirty bitmap context needs from a bitmap. */
export type ExportedBitmap = Pick<DirtyBitmap, "name" | "dirtyExtents">;

/** What an export offers in the `qemu:` namespace. */
export interface QemuNamespaceOptions {
  /** Offer `qemu:allocation-depth`, answered by the walk down this node's backing chain. */
  readonly allocationDepth?: BlockNode;
  /** Offer `qemu:dirty-bitmap:NAME` for each of these (repeats are dropped). */
  readonly bitmaps?: readonly ExportedBitmap[];
}

/** The `qemu:` namespace of one export. */
export function qemuNamespace(options: QemuNamespaceOptions): MetaContextNamespace {
  const contexts: MetaContext[] = [];
  const depthNode = options.allocationDepth;
  if (depthNode) {
    contexts.push({
      name: ALLOCATION_DEPTH_CONTEXT,
      statusOf: (offset, length, max) =>
        collectDescriptors(
          async (at, size) =>
            (await allocationDepth(depthNode, at, size)).map((extent) => ({
              length: extent.length,
              flags: extent.depth,
            })),
          offset,
          length,
          max,
        ),
    });
  }
  const bitmapContexts: MetaContext[] = [];
  for (const bitmap of options.bitmaps ?? []) {
    const name = DIRTY_BITMAP_PREFIX + bitmap.name;
    if (bitmapContexts.some((context) => context.name === name)) continue;
    bitmapContexts.push({
      name,
      statusOf: (offset, length, max) => Promise.resolve(bitmapStatus(bitmap, offset, length, max)),
    });
  }
  contexts.push(...bitmapContexts);
  const byName = new Map(contexts.map((context) => [context.name, context]));
  return {
    namespace: QEMU_NAMESPACE,
    list(leaf) {
      if (leaf === "") return contexts.map((context) => context.name);
      if (leaf === BITMAP_LEAF) return bitmapContexts.map((context) => context.name);
      const exact = `${QEMU_NAMESPACE}:${leaf}`;
      if (leaf === DEPTH_LEAF || leaf.startsWith(BITMAP_LEAF)) {
        return byName.has(exact) ? [exact] : [];
      }
      return [];
    },
    select: (name) => byName.get(name),
  };
}

/** Dirty bitmap descriptors: NBD_STATE_DIRTY on dirty extents. */
function bitmapStatus(
  bitmap: ExportedBitmap,
  offset: number,
  length: number,
  maxDescriptors: number,
): StatusDescriptor[] {
  const descriptors: StatusDescriptor[] = [];
  for (const extent of bitmap.dirtyExtents(offset, length, maxDescriptors)) {
    const flags = extent.dirty ? NBD_STATE_DIRTY : 0;
    if (!pushDescriptor(descriptors, extent.length, flags, maxDescriptors)) break;
  }
  return descriptors;
}
