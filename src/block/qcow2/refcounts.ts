/**
 * qcow2 reference counts: the two-level table (refcount table → refcount
 * blocks) for any refcount width from 1 to 64 bits, cluster allocation and
 * freeing, and the growth of the table when the image outgrows it.
 *
 * Changed refcount blocks are cached and written back by
 * {@linkcode Refcounts.writeBack}; new refcount blocks and a moved table are
 * written (and flushed) before anything points to them, so a crash leaves at
 * worst leaked clusters. Callers serialise every change (one at a time).
 *
 * @module
 */

import { DenbdError } from "../../errors.ts";
import type { BlockNode } from "../node.ts";
import { MAX_REFCOUNT_TABLE_BYTES } from "./header.ts";
import { hostOffsetOf } from "./l2-entry.ts";
import { TableCache } from "./table-cache.ts";

/** Where the refcount table is and how wide its entries are. */
export interface RefcountGeometry {
  /** Bytes in a cluster. */
  readonly clusterSize: number;
  /** log2 of the refcount width in bits (0..6). */
  readonly refcountOrder: number;
  /** Host offset of the refcount table. */
  readonly tableOffset: number;
  /** Clusters of the refcount table. */
  readonly tableClusters: number;
}

/** Records the new place of a moved refcount table in the image header (durably). */
export type TableMoved = (tableOffset: number, tableClusters: number) => Promise<void>;

/** Metadata that cannot be right was found: the image is not changed any more. */
export class CorruptImageError extends DenbdError {
  /** An error of kind "io" saying what is wrong. */
  constructor(message: string) {
    super("io", `qcow2: image is corrupt: ${message}`);
  }
}

/** An error for metadata that cannot be right. */
export function corruptImage(message: string): CorruptImageError {
  return new CorruptImageError(message);
}

/** Offset bits 9..55 of a big-endian u64 at `at` (0 for none). */
export function offsetField(view: DataView, at: number): number {
  return hostOffsetOf(view.getUint32(at), view.getUint32(at + 4));
}

/** Write `value` (an offset below 2^56) as a big-endian u64 at `at`. */
export function setU64(view: DataView, at: number, value: number): void {
  view.setUint32(at, Math.floor(value / 0x1_0000_0000));
  view.setUint32(at + 4, value >>> 0);
}

/** The reference counts of an image's clusters. */
export class Refcounts {
  readonly #file: BlockNode;
  readonly #clusterSize: number;
  readonly #order: number;
  readonly #maxRefcount: number;
  /** Refcount entries per refcount block. */
  readonly #perBlock: number;
  readonly #blocks: TableCache;
  readonly #tableMoved: TableMoved;
  #tableOffset: number;
  #table: DataView;
  /** First cluster index worth searching for free clusters. */
  #freeHint = 0;
  /** One past the highest cluster handed out in this session. */
  #allocatedEnd = 0;

  private constructor(
    file: BlockNode,
    geometry: RefcountGeometry,
    table: Uint8Array,
    tableMoved: TableMoved,
  ) {
    this.#file = file;
    this.#clusterSize = geometry.clusterSize;
    this.#order = geometry.refcountOrder;
    this.#maxRefcount = Math.min(2 ** (1 << this.#order) - 1, Number.MAX_SAFE_INTEGER);
    this.#perBlock = (geometry.clusterSize * 8) >> this.#order;
    this.#tableOffset = geometry.tableOffset;
    this.#table = new DataView(table.buffer, table.byteOffset, table.byteLength);
    this.#tableMoved = tableMoved;
    const cacheBlocks = Math.max(4, Math.floor((4 << 20) / geometry.clusterSize));
    this.#blocks = new TableCache(file, geometry.clusterSize, cacheBlocks);
  }

  /** Read the refcount table of an image (validated against the file's size). */
  static async load(
    file: BlockNode,
    geometry: RefcountGeometry,
    tableMoved: TableMoved,
  ): Promise<Refcounts> {
    const bytes = geometry.tableClusters * geometry.clusterSize;
    if (
      geometry.tableOffset < geometry.clusterSize || geometry.tableOffset + bytes > file.size
    ) {
      throw new DenbdError("invalid", "Reference count table offset invalid");
    }
    const table = new Uint8Array(bytes);
    await file.read(geometry.tableOffset, table);
    return new Refcounts(file, geometry, table, tableMoved);
  }

  /** Refcount block entries in one refcount block. */
  get entriesPerBlock(): number {
    return this.#perBlock;
  }

  /** Whether some refcount block changed and was not written back. */
  get dirty(): boolean {
    return this.#blocks.dirty;
  }

  /** How many changed refcount blocks wait for write-back. */
  get dirtyCount(): number {
    return this.#blocks.dirtyCount;
  }

  /** The refcount of cluster `index`. */
  async get(index: number): Promise<number> {
    const block = await this.#block(index);
    return block ? this.#entry(block.table, index % this.#perBlock) : 0;
  }

  /** Add `delta` to the refcount of cluster `index`; fails on overflow or underflow. */
  async update(index: number, delta: number): Promise<number> {
    let block = await this.#block(index);
    if (!block) {
      await this.#addBlocks(Math.floor(index / this.#perBlock));
      block = (await this.#block(index))!;
    }
    const within = index % this.#perBlock;
    const value = this.#entry(block.table, within) + delta;
    if (value < 0) throw corruptImage(`refcount of cluster ${index} would drop below zero`);
    if (value > this.#maxRefcount) {
      throw new DenbdError("io", `qcow2: refcount overflow at cluster ${index}`);
    }
    this.#setEntry(block.table, within, value);
    this.#blocks.markDirty(block.offset);
    if (value === 0) this.#freeHint = Math.min(this.#freeHint, index);
    return value;
  }

  /**
   * Allocate `count` contiguous free clusters with refcount 1 and return the
   * host offset of the first (they may lie past the end of the file).
   */
  async allocate(count: number): Promise<number> {
    let start = this.#freeHint;
    let firstFree = -1;
    for (let run = 0; run < count;) {
      if ((await this.get(start + run)) === 0) {
        run++;
      } else {
        if (run > 0 && firstFree < 0) firstFree = start;
        start += run + 1;
        run = 0;
      }
    }
    this.#allocatedEnd = Math.max(this.#allocatedEnd, start + count);
    for (let index = start; index < start + count; index++) await this.update(index, 1);
    this.#freeHint = firstFree >= 0 ? firstFree : start + count;
    return start * this.#clusterSize;
  }

  /** Whether the cluster at host `offset` holds the refcount table or a refcount block. */
  holdsRefcounts(offset: number): boolean {
    if (offset >= this.#tableOffset && offset < this.#tableOffset + this.#table.byteLength) {
      return true;
    }
    for (let at = 0; at < this.#table.byteLength; at += 8) {
      if (offsetField(this.#table, at) === offset) return true;
    }
    return false;
  }

  /** Drop one reference from each of `count` clusters from host `offset`. */
  async free(offset: number, count: number): Promise<void> {
    const first = Math.floor(offset / this.#clusterSize);
    for (let index = first; index < first + count; index++) await this.update(index, -1);
  }

  /** Write changed refcount blocks to the file (no flush). */
  writeBack(): Promise<void> {
    return this.#blocks.writeBack();
  }

  /** Host offset of the refcount block covering cluster `index`, 0 when there is none. */
  #blockOffset(index: number): number {
    const tableIndex = Math.floor(index / this.#perBlock);
    if (tableIndex * 8 >= this.#table.byteLength) return 0;
    const offset = offsetField(this.#table, tableIndex * 8);
    if (offset === 0) return 0;
    if (
      (this.#table.getUint32(tableIndex * 8 + 4) & 0x1ff) !== 0 ||
      offset < this.#clusterSize ||
      offset + this.#clusterSize > Math.max(this.#file.size, this.#allocatedEnd * this.#clusterSize)
    ) {
      throw corruptImage(`refcount block offset 0x${offset.toString(16)} invalid`);
    }
    return offset;
  }

  async #block(index: number): Promise<{ offset: number; table: Uint8Array } | undefined> {
    const offset = this.#blockOffset(index);
    if (offset === 0) return undefined;
    return { offset, table: await this.#blocks.get(offset) };
  }

  #entry(block: Uint8Array, within: number): number {
    const order = this.#order;
    if (order < 3) {
      const perByte = 8 >> order;
      const shift = (within % perByte) << order;
      return (block[Math.floor(within / perByte)] >> shift) & ((1 << (1 << order)) - 1);
    }
    const view = new DataView(block.buffer, block.byteOffset, block.byteLength);
    switch (order) {
      case 3:
        return block[within];
      case 4:
        return view.getUint16(within * 2);
      case 5:
        return view.getUint32(within * 4);
      default:
        return view.getUint32(within * 8) * 0x1_0000_0000 + view.getUint32(within * 8 + 4);
    }
  }

  #setEntry(block: Uint8Array, within: number, value: number): void {
    const order = this.#order;
    if (order < 3) {
      const perByte = 8 >> order;
      const shift = (within % perByte) << order;
      const mask = ((1 << (1 << order)) - 1) << shift;
      const at = Math.floor(within / perByte);
      block[at] = (block[at] & ~mask) | (value << shift);
      return;
    }
    const view = new DataView(block.buffer, block.byteOffset, block.byteLength);
    switch (order) {
      case 3:
        block[within] = value;
        break;
      case 4:
        view.setUint16(within * 2, value);
        break;
      case 5:
        view.setUint32(within * 4, value);
        break;
      default:
        setU64(view, within * 8, value);
    }
  }

  /**
   * Create the refcount block for table index `needed`, placing new
   * metadata past everything in use, and grow (move) the table if it is too
   * short; new blocks cover themselves and the new table.
   */
  async #addBlocks(needed: number): Promise<void> {
    const clusterSize = this.#clusterSize;
    const start = Math.max(Math.ceil(this.#file.size / clusterSize), this.#allocatedEnd);
    const oldEntries = this.#table.byteLength / 8;
    const hasBlock = (index: number) =>
      index < oldEntries && offsetField(this.#table, index * 8) !== 0;
    let blocks: number[] = [];
    let tableClusters = 0;
    for (;;) {
      const end = start + blocks.length + tableClusters;
      const wanted = new Set([needed]);
      for (
        let index = Math.floor(start / this.#perBlock);
        end > start && index <= Math.floor((end - 1) / this.#perBlock);
        index++
      ) {
        if (!hasBlock(index)) wanted.add(index);
      }
      const sorted = [...wanted].sort((a, b) => a - b);
      const entries = sorted[sorted.length - 1] + 1;
      const grownClusters = entries > oldEntries
        ? Math.ceil(Math.max(entries, Math.ceil(oldEntries * 1.5)) * 8 / clusterSize)
        : 0;
      if (sorted.length === blocks.length && grownClusters === tableClusters) break;
      blocks = sorted;
      tableClusters = grownClusters;
    }
    if (tableClusters * clusterSize > MAX_REFCOUNT_TABLE_BYTES) {
      throw new DenbdError("no-space", "qcow2: reference count table too large");
    }
    const end = start + blocks.length + tableClusters;
    this.#allocatedEnd = end;
    const newBlocks = new Map<number, { offset: number; table: Uint8Array }>();
    blocks.forEach((tableIndex, i) => {
      const offset = (start + i) * clusterSize;
      newBlocks.set(tableIndex, { offset, table: this.#blocks.create(offset) });
    });
    for (let index = start; index < end; index++) {
      const tableIndex = Math.floor(index / this.#perBlock);
      const block = newBlocks.get(tableIndex) ?? (await this.#block(index))!;
      this.#setEntry(block.table, index % this.#perBlock, 1);
      this.#blocks.markDirty(block.offset);
    }
    await this.#blocks.writeBack();
    await this.#file.flush();
    if (tableClusters === 0) {
      for (const [tableIndex, block] of newBlocks) {
        setU64(this.#table, tableIndex * 8, block.offset);
        await this.#file.write(
          this.#tableOffset + tableIndex * 8,
          new Uint8Array(this.#table.buffer, this.#table.byteOffset + tableIndex * 8, 8),
        );
      }
      await this.#file.flush();
      return;
    }
    const table = new Uint8Array(tableClusters * clusterSize);
    table.set(new Uint8Array(this.#table.buffer, this.#table.byteOffset, this.#table.byteLength));
    const view = new DataView(table.buffer);
    for (const [tableIndex, block] of newBlocks) setU64(view, tableIndex * 8, block.offset);
    const tableOffset = (start + blocks.length) * clusterSize;
    await this.#file.write(tableOffset, table);
    await this.#file.flush();
    const oldOffset = this.#tableOffset;
    const oldClusters = this.#table.byteLength / clusterSize;
    await this.#tableMoved(tableOffset, tableClusters);
    this.#tableOffset = tableOffset;
    this.#table = view;
    await this.free(oldOffset, oldClusters);
  }
}
