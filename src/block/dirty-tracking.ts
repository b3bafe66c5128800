/**
 * The node wrapper that keeps a node's dirty bitmaps up to date: every
 * write, write-zeroes and effective discard through it, whatever the path
 * (any export, any connection, a format node above it), marks the granules
 * it covered in every enabled bitmap of {@linkcode DirtyTrackingNode.bitmaps}.
 *
 * Marking follows QEMU: it happens when the request completes, failed or
 * not (a failed write may have changed part of the range); discards that
 * the node ignores (discard=ignore) change nothing and mark nothing; a
 * read-only node marks nothing. The Daemon wraps every node it opens, so
 * each named node has a bitmap set of its own.
 *
 * @example
 * ```ts
 * import { DirtyTrackingNode } from "./dirty-tracking.ts";
 * import { MemoryNode } from "./memory.ts";
 * const node = new DirtyTrackingNode(new MemoryNode(1 << 20));
 * const b0 = node.bitmaps.create("b0");
 * await node.write(0, new Uint8Array(512));
 * b0.count; // 65536
 * ```
 * @module
 */

import { type DirtyBitmap, DirtyBitmapSet } from "./dirty-bitmap.ts";
import { FilterNode } from "./filter.ts";
import type { BlockNode, WriteOptions, ZeroOptions } from "./node.ts";

/**
 * Where a format that keeps bitmaps in its image (qcow2) stores persistent
 * ones. Nodes without one cannot have persistent bitmaps. The owner of the
 * node calls `load` once when it opens the node (before any other use),
 * `store` with the node's bitmaps when it closes it (QEMU stores them at
 * close and inactivation, not on flush), and `remove` is called by
 * block-dirty-bitmap-remove of a persistent bitmap, which QEMU applies to
 * the image at once.
 */
export interface PersistentBitmapStore {
  /**
   * Throw a DenbdError with QEMU's reason (the caller adds "Can't make
   * bitmap 'NAME' persistent in 'NODE': ") when a new persistent bitmap
   * `name` of `granularity` cannot be stored in the image.
   */
  checkNewBitmap(name: string, granularity: number): void;
  /** The bitmaps stored in the image, to adopt into the node's set; marks them in use in a writable image. */
  load(): Promise<DirtyBitmap[]>;
  /**
   * Store the persistent bitmaps among `bitmaps` (others are skipped);
   * durable when it resolves. Pass the node's set newest first
   * (`DirtyBitmapSet.list()`): bitmaps new to the image are added to its
   * directory in that order, as QEMU adds them.
   */
  store(bitmaps: readonly DirtyBitmap[]): Promise<void>;
  /** Remove bitmap `name` from the image now (no error if the image does not hold it). */
  remove(name: string): Promise<void>;
}

/** How a node is wrapped. */
export interface DirtyTrackingOptions {
  /** Granularity of bitmaps created without one (default: 64 KiB). */
  readonly defaultGranularity?: number;
  /** Where persistent bitmaps go; absent for nodes that cannot store them (raw, file). */
  readonly persistentStore?: PersistentBitmapStore;
}

/** A node with dirty bitmaps, marked by every change made through it. */
export class DirtyTrackingNode extends FilterNode {
  /** This node's bitmaps. */
  readonly bitmaps: DirtyBitmapSet;
  /** Where persistent bitmaps are stored, if this node can store them. */
  readonly persistentStore: PersistentBitmapStore | undefined;

  /** Wrap `inner`; it is closed when this node is closed. */
  constructor(inner: BlockNode, options: DirtyTrackingOptions = {}) {
    super(inner, { ownsFile: true });
    this.bitmaps = new DirtyBitmapSet(inner.size, {
      defaultGranularity: options.defaultGranularity,
    });
    this.persistentStore = options.persistentStore;
  }

  /** Write, then mark the range dirty (also when the write failed). */
  protected override async driverWrite(
    offset: number,
    data: Uint8Array,
    options: WriteOptions,
  ): Promise<void> {
    try {
      await super.driverWrite(offset, data, options);
    } finally {
      this.bitmaps.markDirty(offset, data.length);
    }
  }

  /** Write at once where the inner node can, marking the range dirty when it did. */
  protected override driverWriteNow(
    offset: number,
    data: Uint8Array,
    options: WriteOptions,
  ): boolean {
    if (!this.file.writeNow(this.fileOffset(offset), data, options)) return false;
    this.bitmaps.markDirty(offset, data.length);
    return true;
  }

  /** Zero, then mark the range dirty (also when zeroing failed or was refused as not fast). */
  protected override async driverWriteZeroes(
    offset: number,
    length: number,
    options: ZeroOptions,
  ): Promise<void> {
    try {
      await super.driverWriteZeroes(offset, length, options);
    } finally {
      this.bitmaps.markDirty(offset, length);
    }
  }

  /** Discard, then mark the range dirty, unless the inner node ignores discards. */
  protected override async driverTrim(
    offset: number,
    length: number,
    options: WriteOptions,
  ): Promise<void> {
    if (!this.file.capabilities.trim) return await super.driverTrim(offset, length, options);
    try {
      await super.driverTrim(offset, length, options);
    } finally {
      this.bitmaps.markDirty(offset, length);
    }
  }
}
