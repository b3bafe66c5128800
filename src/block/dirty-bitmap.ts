/**
 * Dirty bitmaps: which granules of a node changed since a bitmap was created
 * or last cleared, as QEMU keeps them for incremental backup and exposes
 * over NBD (`qemu:dirty-bitmap:NAME`). One bit per granule; a granule is a
 * power of two between 512 bytes and 2 GiB.
 *
 * A {@linkcode DirtyBitmapSet} holds the bitmaps of one node; the node's
 * {@linkcode DirtyTrackingNode} wrapper marks every enabled bitmap of the set
 * on each write, write-zeroes and effective discard. The QMP-shaped
 * operations, with QEMU's checks and messages, are in `bitmap-commands.ts`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DirtyBitmapSet } from "./dirty-bitmap.ts";
 * const bitmaps = new DirtyBitmapSet(1 << 20);
 * const b0 = bitmaps.create("b0", { granularity: 4096 });
 * bitmaps.markDirty(5000, 10);
 * assert.deepEqual(b0.dirtyExtents(0, 1 << 20, 16), [
 *   { length: 4096, dirty: false },
 *   { length: 4096, dirty: true }, // the granule holding bytes 5000..5009
 *   { length: (1 << 20) - 8192, dirty: false },
 * ]);
 * ```
 * @module
 */

/** The smallest granularity QEMU accepts (one sector). */
export const BITMAP_MIN_GRANULARITY = 512;
/** The largest granularity: QMP's granularity is a uint32, so 2^31 is the largest power of two. */
export const BITMAP_MAX_GRANULARITY = 2 ** 31;
/** Granularity of a node that has no cluster size (raw files, protocol nodes). */
export const BITMAP_DEFAULT_GRANULARITY = 64 * 1024;
/** Longest bitmap name, in UTF-8 bytes (QEMU's BDRV_BITMAP_MAX_NAME_SIZE). */
export const BITMAP_MAX_NAME_BYTES = 1023;

/**
 * QEMU's default granularity for a node: its cluster size clamped to
 * [4 KiB, 64 KiB] when it has one (qcow2), else 64 KiB.
 */
export function defaultBitmapGranularity(clusterSize?: number): number {
  if (!clusterSize || clusterSize <= 0) return BITMAP_DEFAULT_GRANULARITY;
  return Math.min(BITMAP_DEFAULT_GRANULARITY, Math.max(4096, clusterSize));
}

/** Whether `granularity` is a power of two within QEMU's limits. */
export function isValidGranularity(granularity: number): boolean {
  return Number.isInteger(granularity) && granularity >= BITMAP_MIN_GRANULARITY &&
    granularity <= BITMAP_MAX_GRANULARITY && (granularity & (granularity - 1)) === 0;
}

/** One run of a bitmap's answer to "which bytes are dirty". */
export interface DirtyExtent {
  /** Bytes covered; always > 0. */
  readonly length: number;
  /** The bytes lie in dirty granules. */
  readonly dirty: boolean;
}

/** How a bitmap is created. */
export interface DirtyBitmapOptions {
  /** Bytes per bit (a valid granularity; see {@linkcode isValidGranularity}). */
  readonly granularity?: number;
  /** Stored in the image and loaded again on open (qcow2 only). */
  readonly persistent?: boolean;
  /** Created disabled: writes do not mark it until it is enabled. */
  readonly disabled?: boolean;
  /**
   * Loaded from an image where it was not stored cleanly (qcow2's in_use
   * flag): it is created disabled, stays clean and cannot be used.
   */
  readonly inconsistent?: boolean;
  /** Loaded from a read-only image: it cannot be changed. */
  readonly readOnly?: boolean;
}

/** What query-named-block-nodes reports for a bitmap (QEMU's BlockDirtyInfo). */
export interface DirtyBitmapInfo {
  /** The bitmap's name. */
  readonly name: string;
  /** Writes are being recorded (the bitmap is enabled). */
  readonly recording: boolean;
  /** Stored in the image. */
  readonly persistent: boolean;
  /** In use by an operation (an NBD export) and cannot be changed. */
  readonly busy: boolean;
  /** Bytes per bit. */
  readonly granularity: number;
  /** Dirty bytes: dirty granules times the granularity (the last granule counts whole). */
  readonly count: number;
  /** Present (true) only for a persistent bitmap that was not stored cleanly. */
  readonly inconsistent?: true;
}

/** Bits per storage word. */
const WORD_BITS = 32;

/** Set bits in a 32-bit word. */
function popcount(word: number): number {
  word = word - ((word >>> 1) & 0x55555555);
  word = (word & 0x33333333) + ((word >>> 2) & 0x33333333);
  return (((word + (word >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

/** Index of the lowest set bit of a non-zero word. */
function lowestBit(word: number): number {
  return 31 - Math.clz32(word & -word);
}

/** A mask of bits [from, to) of one word (0 <= from < to <= 32). */
function rangeMask(from: number, to: number): number {
  const high = to === WORD_BITS ? 0xffffffff : (1 << to) - 1;
  return (high & ~((1 << from) - 1)) >>> 0;
}

/**
 * One bitmap over `size` bytes. Its state flags follow QEMU: `enabled`
 * (recording), `busy` (claimed by an export), `readOnly` and `inconsistent`
 * (set only for persistent bitmaps loaded from an image).
 */
export class DirtyBitmap {
  /** The bitmap's name, unique on its node. */
  readonly name: string;
  /** Bytes per bit, a power of two. */
  readonly granularity: number;
  /** Stored in the image. */
  readonly persistent: boolean;
  /** Bytes covered: the node's size when the bitmap was created. */
  readonly size: number;
  /** Writes mark this bitmap. */
  enabled: boolean;
  /** Loaded from a read-only image: cannot be changed. */
  readOnly: boolean;
  /** Loaded from an image where it was not stored cleanly: cannot be used. */
  inconsistent: boolean;
  /** Granules covering `size`. */
  readonly #granules: number;
  /** Storage words: granules rounded up to whole 64-bit words, laid out like QEMU's. */
  readonly #wordCount: number;
  /**
   * The bits, 32 to a word, lowest bit first; allocated on the first dirty
   * granule, so clean bitmaps (an inconsistent one loaded from a hostile
   * image among them) cost no memory.
   */
  #words: Uint32Array | undefined;
  #dirtyGranules = 0;
  #busy = false;

  /** A clean bitmap over `size` bytes. */
  constructor(name: string, size: number, options: DirtyBitmapOptions = {}) {
    const granularity = options.granularity ?? BITMAP_DEFAULT_GRANULARITY;
    if (!isValidGranularity(granularity)) {
      throw new RangeError(`invalid dirty bitmap granularity ${granularity}`);
    }
    this.name = name;
    this.size = size;
    this.granularity = granularity;
    this.persistent = Boolean(options.persistent);
    this.inconsistent = Boolean(options.inconsistent);
    this.enabled = !options.disabled && !this.inconsistent;
    this.readOnly = Boolean(options.readOnly);
    this.#granules = Math.ceil(size / granularity);
    this.#wordCount = 2 * Math.ceil(this.#granules / 64);
  }

  /** Claimed by an operation (an NBD export): most changes are refused. */
  get busy(): boolean {
    return this.#busy;
  }

  /** Mark the bitmap busy; the returned function (idempotent) releases it. */
  claim(): () => void {
    if (this.#busy) throw new Error(`bitmap '${this.name}' is already busy`);
    this.#busy = true;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#busy = false;
    };
  }

  /** Dirty bytes as QEMU counts them: dirty granules times the granularity. */
  get count(): number {
    return this.#dirtyGranules * this.granularity;
  }

  /** The state query-named-block-nodes reports. */
  info(): DirtyBitmapInfo {
    return {
      name: this.name,
      recording: this.enabled,
      persistent: this.persistent,
      busy: this.#busy,
      granularity: this.granularity,
      count: this.count,
      ...(this.inconsistent ? { inconsistent: true as const } : {}),
    };
  }

  /** Mark the granules touching [offset, offset + length) dirty, enabled or not. */
  mark(offset: number, length: number): void {
    const end = Math.min(offset + length, this.size);
    if (length <= 0 || offset >= end) return;
    this.#setRange(
      Math.floor(offset / this.granularity),
      Math.floor((end - 1) / this.granularity) + 1,
    );
  }

  /** Make every granule clean. */
  clear(): void {
    this.#words = undefined;
    this.#dirtyGranules = 0;
  }

  /**
   * Bytes of the bits as qcow2 stores them: one bit per granule, granule 0
   * in the lowest bit of byte 0.
   */
  get storedBytes(): number {
    return Math.ceil(this.#granules / 8);
  }

  /**
   * Copy the stored form of the bits from byte `firstByte` into `into`
   * (bytes past {@linkcode DirtyBitmap.storedBytes} are zero).
   */
  exportBits(firstByte: number, into: Uint8Array): void {
    into.fill(0);
    const words = this.#words;
    if (!words) return;
    const end = Math.min(into.length, this.storedBytes - firstByte);
    for (let index = 0; index < end; index++) {
      const byte = firstByte + index;
      into[index] = (words[Math.floor(byte / 4)] >>> ((byte % 4) * 8)) & 0xff;
    }
  }

  /**
   * Whether any granule whose bit lies in stored bytes
   * [firstByte, firstByte + length) is dirty.
   */
  anyDirtyIn(firstByte: number, length: number): boolean {
    const from = firstByte * 8;
    const to = Math.min(this.#granules, (firstByte + length) * 8);
    return from < to && this.#nextWith(from, true, to) < to;
  }

  /**
   * Mark dirty the granules whose bits are set in `from`, the stored form of
   * the bits from byte `firstByte` (bits past the last granule are ignored).
   */
  importBits(firstByte: number, from: Uint8Array): void {
    const end = Math.min(from.length, this.storedBytes - firstByte);
    if (end <= 0) return;
    const words = this.#storage();
    const firstWord = Math.floor(firstByte / 4);
    const lastWord = Math.floor((firstByte + end - 1) / 4);
    let before = 0;
    for (let index = firstWord; index <= lastWord; index++) before += popcount(words[index]);
    for (let index = 0; index < end; index++) {
      const byte = firstByte + index;
      words[Math.floor(byte / 4)] |= from[index] << ((byte % 4) * 8);
    }
    // Bits past the last granule stay clear.
    const tail = this.#granules % WORD_BITS;
    if (tail && lastWord === Math.floor((this.#granules - 1) / WORD_BITS)) {
      words[lastWord] &= rangeMask(0, tail);
    }
    let after = 0;
    for (let index = firstWord; index <= lastWord; index++) after += popcount(words[index]);
    this.#dirtyGranules += after - before;
  }

  /** Mark dirty every granule whose bit lies in stored bytes [firstByte, firstByte + length). */
  importOnes(firstByte: number, length: number): void {
    const to = Math.min(this.#granules, (firstByte + length) * 8);
    if (firstByte * 8 < to) this.#setRange(firstByte * 8, to);
  }

  /** Whether the granule holding byte `offset` is dirty. */
  isDirty(offset: number): boolean {
    if (offset < 0 || offset >= this.size) return false;
    return this.#bit(Math.floor(offset / this.granularity));
  }

  /**
   * Runs of dirty and clean bytes from `offset`, at most `maxExtents` of
   * them, together covering `length` bytes or stopping early at the limit.
   * Bytes past the bitmap's size are clean.
   */
  dirtyExtents(offset: number, length: number, maxExtents = Infinity): DirtyExtent[] {
    const extents: DirtyExtent[] = [];
    const end = offset + length;
    let position = offset;
    while (position < end && extents.length < maxExtents) {
      if (position >= this.size) {
        extents.push({ length: end - position, dirty: false });
        break;
      }
      const granule = Math.floor(position / this.granularity);
      const dirty = this.#bit(granule);
      const limit = Math.min(this.#granules, Math.ceil(end / this.granularity));
      const change = this.#nextWith(granule + 1, !dirty, limit);
      // Past the last granule, dirty runs stop at the size and clean ones run on.
      const changeAt = change < this.#granules
        ? change * this.granularity
        : (dirty ? this.size : end);
      const stop = Math.min(end, changeAt);
      extents.push({ length: stop - position, dirty });
      position = stop;
    }
    return extents;
  }

  /**
   * Add every dirty granule of `source` (any granularity, same size) to this
   * bitmap. A source granule larger than this bitmap's marks all the granules
   * it covers; a smaller one marks the granule that holds it.
   */
  mergeFrom(source: DirtyBitmap): void {
    if (source.size !== this.size) {
      throw new RangeError(`bitmaps of different sizes: ${this.size} and ${source.size}`);
    }
    if (source === this) return;
    if (source.granularity === this.granularity) {
      const from = source.#words;
      if (!from) return;
      const words = this.#storage();
      let dirty = 0;
      for (let index = 0; index < words.length; index++) {
        const word = (words[index] | from[index]) >>> 0;
        words[index] = word;
        dirty += popcount(word);
      }
      this.#dirtyGranules = dirty;
      return;
    }
    let granule = source.#nextWith(0, true, source.#granules);
    while (granule < source.#granules) {
      const clean = source.#nextWith(granule + 1, false, source.#granules);
      const start = granule * source.granularity;
      this.mark(start, Math.min(clean * source.granularity, this.size) - start);
      granule = source.#nextWith(clean, true, source.#granules);
    }
  }

  /**
   * SHA-256 of the bits as QEMU's x-debug-block-dirty-bitmap-sha256 hashes
   * them: 64-bit little-endian words, granule 0 in the lowest bit.
   */
  async sha256(): Promise<string> {
    const bytes = new Uint8Array(this.#wordCount * 4);
    const view = new DataView(bytes.buffer);
    this.#words?.forEach((word, index) => view.setUint32(index * 4, word, true));
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    return Array.from(digest, (byte) => byte.toString(16).padStart(2, "0")).join("");
  }

  #bit(granule: number): boolean {
    const word = this.#words?.[Math.floor(granule / WORD_BITS)] ?? 0;
    return (word & (1 << (granule % WORD_BITS))) !== 0;
  }

  /** The words, allocated on first use. */
  #storage(): Uint32Array {
    this.#words ??= new Uint32Array(this.#wordCount);
    return this.#words;
  }

  /** Set granules [from, to). */
  #setRange(from: number, to: number): void {
    let added = 0;
    const words = this.#storage();
    for (let granule = from; granule < to;) {
      const index = Math.floor(granule / WORD_BITS);
      const bit = granule % WORD_BITS;
      const stop = Math.min(WORD_BITS, bit + (to - granule));
      const old = words[index];
      const word = (old | rangeMask(bit, stop)) >>> 0;
      if (word !== old) {
        added += popcount(word) - popcount(old);
        words[index] = word;
      }
      granule += stop - bit;
    }
    this.#dirtyGranules += added;
  }

  /** The first granule in [from, limit) whose bit is `dirty`, or `limit` if none. */
  #nextWith(from: number, dirty: boolean, limit: number): number {
    const words = this.#words;
    if (!words) return dirty ? limit : Math.min(from, limit);
    let granule = from;
    while (granule < limit) {
      const index = Math.floor(granule / WORD_BITS);
      const bit = granule % WORD_BITS;
      const word = dirty ? words[index] : ~words[index];
      const candidates = (word & rangeMask(bit, WORD_BITS)) >>> 0;
      if (candidates) return Math.min(limit, index * WORD_BITS + lowestBit(candidates));
      granule = (index + 1) * WORD_BITS;
    }
    return limit;
  }
}

/**
 * The bitmaps of one node, in creation order. Every enabled bitmap is
 * marked by {@linkcode DirtyBitmapSet.markDirty}; disabled ones never change.
 */
export class DirtyBitmapSet {
  /** Bytes of the node the bitmaps cover. */
  readonly size: number;
  /** Granularity of bitmaps created without one. */
  readonly defaultGranularity: number;
  readonly #bitmaps = new Map<string, DirtyBitmap>();

  /** An empty set for a node of `size` bytes. */
  constructor(size: number, options: { defaultGranularity?: number } = {}) {
    this.size = size;
    this.defaultGranularity = options.defaultGranularity ?? BITMAP_DEFAULT_GRANULARITY;
  }

  /** Number of bitmaps. */
  get length(): number {
    return this.#bitmaps.size;
  }

  /** Add a clean bitmap; the name must be new (checked by the caller with QEMU's message). */
  create(name: string, options: DirtyBitmapOptions = {}): DirtyBitmap {
    if (this.#bitmaps.has(name)) throw new Error(`bitmap '${name}' already exists`);
    const bitmap = new DirtyBitmap(name, this.size, {
      ...options,
      granularity: options.granularity ?? this.defaultGranularity,
    });
    this.#bitmaps.set(name, bitmap);
    return bitmap;
  }

  /**
   * Add an existing bitmap (one loaded from an image); its name must be new
   * and its size the set's.
   */
  adopt(bitmap: DirtyBitmap): void {
    if (this.#bitmaps.has(bitmap.name)) throw new Error(`bitmap '${bitmap.name}' already exists`);
    if (bitmap.size !== this.size) {
      throw new RangeError(`bitmap '${bitmap.name}' covers ${bitmap.size} bytes, not ${this.size}`);
    }
    this.#bitmaps.set(bitmap.name, bitmap);
  }

  /** The bitmap named exactly `name`. */
  find(name: string): DirtyBitmap | undefined {
    return this.#bitmaps.get(name);
  }

  /** Forget `bitmap`; false if it is not in this set. */
  delete(bitmap: DirtyBitmap): boolean {
    if (this.#bitmaps.get(bitmap.name) !== bitmap) return false;
    return this.#bitmaps.delete(bitmap.name);
  }

  /** Every bitmap, newest first (the order QEMU reports them in). */
  list(): DirtyBitmap[] {
    return [...this.#bitmaps.values()].reverse();
  }

  /** Mark [offset, offset + length) in every enabled bitmap. */
  markDirty(offset: number, length: number): void {
    for (const bitmap of this.#bitmaps.values()) {
      if (bitmap.enabled) bitmap.mark(offset, length);
    }
  }
}
