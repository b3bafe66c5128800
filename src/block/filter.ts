/**
 * The filter base: a node over one `file` child that forwards every
 * operation to it unchanged, so that a filter (the raw format's windows,
 * dirty tracking, later throttling or copy-on-read) overrides only what it
 * changes. Requests are checked once by {@linkcode CheckedNode} on the way
 * in, then again by the child, which is a checked node itself.
 *
 * The synchronous fast paths (`readNow`, `holdsDataNow`) are forwarded
 * too, so a filter that changes what reads return must override them as
 * well; `writeNow` is not forwarded (it answers false, and the write takes
 * the path a filter overrides) unless a filter opts in, as raw and dirty
 * tracking do.
 *
 * A filter maps its offsets to its child's with
 * {@linkcode FilterNode.fileOffset} (identity unless overridden), which is
 * also how the walk down a backing chain (`chain.ts`) sees through it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FilterNode } from "./filter.ts";
 * import { MemoryNode } from "./memory.ts";
 * class Counting extends FilterNode {
 *   reads = 0;
 *   protected override driverRead(offset: number, into: Uint8Array) {
 *     this.reads++;
 *     return super.driverRead(offset, into);
 *   }
 * }
 * const node = new Counting(new MemoryNode(4096), { ownsFile: true });
 * await node.read(0, new Uint8Array(16));
 * assert.equal(node.reads, 1);
 * assert.equal(node.size, 4096);
 * ```
 * @module
 */

import { CheckedNode } from "./checked-node.ts";
import type {
  BlockExtent,
  BlockNode,
  NodeCapabilities,
  NodeChild,
  WriteOptions,
  ZeroOptions,
} from "./node.ts";

/** How a filter holds its child. */
export interface FilterNodeOptions {
  /** Close the child when the filter is closed (the child has no other owner). */
  readonly ownsFile?: boolean;
}

/** A node that forwards everything to its `file` child; subclasses override what they change. */
export class FilterNode extends CheckedNode {
  /** The child every operation goes to. */
  readonly file: BlockNode;
  /** The child, in the role `file`. */
  readonly children: readonly NodeChild[];
  readonly #ownsFile: boolean;

  /** A filter over `file`. */
  constructor(file: BlockNode, options: FilterNodeOptions = {}) {
    super();
    this.file = file;
    this.children = [{ role: "file", node: file }];
    this.#ownsFile = Boolean(options.ownsFile);
  }

  /** The child's size. */
  get size(): number {
    return this.file.size;
  }

  /** Growable when the child is: a filter over the file of a format node must let it grow. */
  override get growable(): boolean {
    return this.file.growable;
  }

  /** The child's capabilities. */
  get capabilities(): NodeCapabilities {
    return this.file.capabilities;
  }

  /** The child's alignment. */
  get requestAlignment(): number {
    return this.file.requestAlignment;
  }

  /** Where byte `offset` of this node lies in the child. */
  fileOffset(offset: number): number {
    return offset;
  }

  /** Flush the child. */
  flush(): Promise<void> {
    return this.file.flush();
  }

  /** Close the child when this filter owns it; otherwise nothing to release. */
  close(): Promise<void> {
    return this.#ownsFile ? this.file.close() : Promise.resolve();
  }

  /** Read from the child. */
  protected driverRead(offset: number, into: Uint8Array): Promise<void> {
    return this.file.read(this.fileOffset(offset), into);
  }

  /** Read from the child at once, where it can. */
  protected override driverReadNow(offset: number, into: Uint8Array): boolean {
    return this.file.readNow(this.fileOffset(offset), into);
  }

  /** The child's data, known at once where it knows. */
  protected override driverHoldsDataNow(offset: number, length: number): boolean {
    return this.file.holdsDataNow(this.fileOffset(offset), length);
  }

  /** Write to the child. */
  protected driverWrite(offset: number, data: Uint8Array, options: WriteOptions): Promise<void> {
    return this.file.write(this.fileOffset(offset), data, options);
  }

  /** Zero in the child. */
  protected driverWriteZeroes(offset: number, length: number, options: ZeroOptions): Promise<void> {
    return this.file.writeZeroes(this.fileOffset(offset), length, options);
  }

  /** Discard in the child. */
  protected driverTrim(offset: number, length: number, options: WriteOptions): Promise<void> {
    return this.file.trim(this.fileOffset(offset), length, options);
  }

  /** Prefetch in the child. */
  protected driverCache(offset: number, length: number): Promise<void> {
    return this.file.cache(this.fileOffset(offset), length);
  }

  /** The child's block status. */
  protected driverBlockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    return this.file.blockStatus(this.fileOffset(offset), length);
  }
}
