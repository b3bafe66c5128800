/**
 * A small qcow2 image keeper for the bitmap tests, standing in for the qcow2
 * driver's `Qcow2Metadata`: it creates an empty image as `qemu-img create -f
 * qcow2` lays it out (header, refcount table, one refcount block, L1 table)
 * or opens one, allocates clusters at the end of the file, keeps 16-bit
 * refcounts right (so `qemu-img check` can judge what the bitmap code did)
 * and rewrites the header's extensions. Images stay below the 2 GiB one
 * refcount block covers. Not a qcow2 driver: guest data is never touched.
 *
 * @module
 */

import type { Qcow2Metadata } from "../../src/block/qcow2/qcow2-node.ts";
import type { BlockNode } from "../../src/block/node.ts";

/** The bitmaps extension's type. */
const BITMAPS_EXTENSION = 0x23852875;
/** Where the autoclear features are in a v3 header. */
const AUTOCLEAR_OFFSET = 88;

/** One header extension. */
interface Extension {
  readonly type: number;
  readonly data: Uint8Array;
}

/** A `Qcow2Metadata` over an image file, for tests. */
export class TestQcow2Metadata implements Qcow2Metadata {
  readonly file: BlockNode;
  readonly clusterSize: number;
  readonly virtualSize: number;
  readonly writable: boolean;
  readonly version: number;
  readonly #headerLength: number;
  readonly #refcountTableOffset: number;
  #extensions: Extension[];
  #autoclear: bigint;

  private constructor(
    file: BlockNode,
    header: DataView,
    extensions: Extension[],
    writable: boolean,
  ) {
    this.file = file;
    this.writable = writable;
    this.version = header.getUint32(4);
    this.clusterSize = 2 ** header.getUint32(20);
    this.virtualSize = Number(header.getBigUint64(24));
    this.#refcountTableOffset = Number(header.getBigUint64(48));
    this.#headerLength = this.version >= 3 ? header.getUint32(100) : 72;
    this.#autoclear = this.version >= 3 ? header.getBigUint64(AUTOCLEAR_OFFSET) : 0n;
    this.#extensions = extensions;
    if (this.version >= 3 && header.getUint32(96) !== 4) {
      throw new Error("fixture: refcount_bits 16 only");
    }
    if (header.getBigUint64(8) !== 0n) throw new Error("fixture: no backing file");
  }

  /** Open the image in `file` (writable unless `writable` is false). */
  static async open(file: BlockNode, writable = true): Promise<TestQcow2Metadata> {
    const first = new Uint8Array(Math.min(file.size, 4096));
    await file.read(0, first);
    const header = new DataView(first.buffer);
    const version = header.getUint32(4);
    const extensions: Extension[] = [];
    let at = version >= 3 ? header.getUint32(100) : 72;
    while (at + 8 <= first.length) {
      const type = header.getUint32(at);
      const length = header.getUint32(at + 4);
      if (type === 0) break;
      extensions.push({ type, data: first.slice(at + 8, at + 8 + length) });
      at += 8 + Math.ceil(length / 8) * 8;
    }
    return new TestQcow2Metadata(file, header, extensions, writable);
  }

  /** Write an empty v3 image of `virtualSize` bytes into `file` (laid out as qemu-img does) and open it. */
  static async create(
    file: BlockNode,
    virtualSize: number,
    clusterSize = 65536,
  ): Promise<TestQcow2Metadata> {
    const clusterBits = Math.log2(clusterSize);
    const image = new Uint8Array(4 * clusterSize);
    const view = new DataView(image.buffer);
    view.setUint32(0, 0x514649fb);
    view.setUint32(4, 3);
    view.setUint32(20, clusterBits);
    view.setBigUint64(24, BigInt(virtualSize));
    view.setUint32(36, Math.max(1, Math.ceil(virtualSize / (clusterSize * (clusterSize / 8)))));
    view.setBigUint64(40, BigInt(3 * clusterSize)); // L1 table
    view.setBigUint64(48, BigInt(clusterSize)); // refcount table
    view.setUint32(56, 1);
    view.setUint32(96, 4); // refcount_order: 16 bits
    view.setUint32(100, 112);
    view.setBigUint64(clusterSize, BigInt(2 * clusterSize)); // refcount block 0
    for (let cluster = 0; cluster < 4; cluster++) view.setUint16(2 * clusterSize + cluster * 2, 1);
    await file.write(0, image);
    return await TestQcow2Metadata.open(file);
  }

  get bitmapsExtension(): Uint8Array | undefined {
    return this.#extensions.find((extension) => extension.type === BITMAPS_EXTENSION)?.data;
  }

  get bitmapsConsistent(): boolean {
    return (this.#autoclear & 1n) !== 0n;
  }

  /** The refcount of the cluster at `offset`. */
  async refcount(offset: number): Promise<number> {
    const bytes = new Uint8Array(2);
    await this.file.read(await this.#refcountAddress(offset), bytes);
    return new DataView(bytes.buffer).getUint16(0);
  }

  /** Offsets of every cluster with a non-zero refcount. */
  async usedClusters(): Promise<number[]> {
    const used: number[] = [];
    for (let offset = 0; offset < this.file.size; offset += this.clusterSize) {
      if (await this.refcount(offset) > 0) used.push(offset);
    }
    return used;
  }

  async allocateClusters(count: number): Promise<number> {
    const offset = Math.ceil(this.file.size / this.clusterSize) * this.clusterSize;
    await this.file.write(offset, new Uint8Array(count * this.clusterSize));
    for (let index = 0; index < count; index++) {
      await this.#setRefcount(offset + index * this.clusterSize, 1);
    }
    return offset;
  }

  async freeClusters(offset: number, count: number): Promise<void> {
    for (let index = 0; index < count; index++) {
      const cluster = offset + index * this.clusterSize;
      const refcount = await this.refcount(cluster);
      if (refcount === 0) throw new Error(`fixture: freeing free cluster ${cluster}`);
      await this.#setRefcount(cluster, refcount - 1);
    }
  }

  isValidMetadataRange(offset: number, length: number): boolean {
    return Number.isSafeInteger(offset) && offset >= this.clusterSize && length >= 0 &&
      offset + length <= this.file.size;
  }

  async writeBitmapsExtension(data: Uint8Array | undefined, consistent: boolean): Promise<void> {
    if (!this.writable) throw new Error("fixture: read-only");
    this.#extensions = this.#extensions.filter((extension) => extension.type !== BITMAPS_EXTENSION);
    if (data) this.#extensions.push({ type: BITMAPS_EXTENSION, data: data.slice() });
    this.#autoclear = consistent ? this.#autoclear | 1n : this.#autoclear & ~1n;
    const size = this.#extensions.reduce(
      (total, extension) => total + 8 + Math.ceil(extension.data.length / 8) * 8,
      8,
    );
    const area = new Uint8Array(size);
    const view = new DataView(area.buffer);
    let at = 0;
    for (const extension of this.#extensions) {
      view.setUint32(at, extension.type);
      view.setUint32(at + 4, extension.data.length);
      area.set(extension.data, at + 8);
      at += 8 + Math.ceil(extension.data.length / 8) * 8;
    }
    const autoclear = new Uint8Array(8);
    new DataView(autoclear.buffer).setBigUint64(0, this.#autoclear);
    await this.file.write(this.#headerLength, area);
    await this.file.write(AUTOCLEAR_OFFSET, autoclear);
    await this.file.flush();
  }

  async #refcountAddress(offset: number): Promise<number> {
    const perBlock = this.clusterSize / 2;
    const cluster = Math.floor(offset / this.clusterSize);
    if (cluster >= perBlock) throw new Error("fixture: one refcount block only");
    const entry = new Uint8Array(8);
    await this.file.read(this.#refcountTableOffset, entry);
    const block = Number(new DataView(entry.buffer).getBigUint64(0));
    return block + cluster * 2;
  }

  async #setRefcount(offset: number, refcount: number): Promise<void> {
    const bytes = new Uint8Array(2);
    new DataView(bytes.buffer).setUint16(0, refcount);
    await this.file.write(await this.#refcountAddress(offset), bytes);
  }
}
