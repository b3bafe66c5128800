/**
 * The on-disk form of qcow2's persistent dirty bitmaps (QEMU's
 * docs/interop/qcow2.txt, "Bitmaps extension"): the 24-byte header
 * extension, the bitmap directory and the bitmap tables, as pure encoders and
 * decoders. Decoders check what QEMU checks and fail with its messages.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeBitmapDirectory, encodeBitmapDirectory } from "./bitmap-format.ts";
 * const entry = {
 *   name: "b0", tableOffset: 65536, tableSize: 1, granularityBits: 16, inUse: false, auto: true,
 * };
 * const bytes = encodeBitmapDirectory([entry]);
 * const limits = { clusterSize: 65536, virtualSize: 1 << 20 };
 * assert.deepEqual(decodeBitmapDirectory(bytes, 1, limits), [entry]);
 * ```
 * @module
 */

import { DenbdError } from "../../errors.ts";

/** Size of the bitmaps header extension's data. */
export const BITMAPS_EXTENSION_SIZE = 24;
/** Most bitmaps in one image (QEMU's QCOW2_MAX_BITMAPS). */
export const MAX_BITMAPS = 65535;
/** Largest bitmap directory (QEMU's QCOW2_MAX_BITMAP_DIRECTORY_SIZE: 1 KiB per bitmap). */
export const MAX_DIRECTORY_SIZE = 1024 * MAX_BITMAPS;
/** Most entries in one bitmap table (QEMU's BME_MAX_TABLE_SIZE). */
export const MAX_TABLE_ENTRIES = 0x8000000;
/** Most bytes of bitmap data one bitmap may take (QEMU's BME_MAX_PHYS_SIZE, 512 MiB). */
export const MAX_BITMAP_DATA_BYTES = 0x20000000;
/** Granularity bounds, as powers of two. */
export const MIN_GRANULARITY_BITS = 9;
/** Largest granularity, as a power of two. */
export const MAX_GRANULARITY_BITS = 31;
/** Longest bitmap name, in bytes. */
export const MAX_NAME_BYTES = 1023;

/** Size of a directory entry before its extra data and name. */
const ENTRY_HEADER_SIZE = 24;
/** The only bitmap type: dirty tracking. */
const TYPE_DIRTY_TRACKING = 1;
/** Directory entry flags. */
const FLAG_IN_USE = 1;
const FLAG_AUTO = 2;
/** Flags QEMU knows; any other set bit makes the entry invalid. */
const KNOWN_FLAGS = FLAG_IN_USE | FLAG_AUTO;

/** The bitmaps header extension. */
export interface BitmapsExtension {
  /** Bitmaps in the directory (1..65535). */
  readonly count: number;
  /** Bytes of the directory. */
  readonly directorySize: number;
  /** Where the directory starts (cluster aligned). */
  readonly directoryOffset: number;
}

/** One bitmap of the directory. */
export interface BitmapDirectoryEntry {
  /** The bitmap's name (UTF-8 on disk, 1..1023 bytes). */
  readonly name: string;
  /** Where its bitmap table starts (cluster aligned). */
  readonly tableOffset: number;
  /** Entries of its bitmap table. */
  readonly tableSize: number;
  /** Bytes per bit, as a power of two. */
  readonly granularityBits: number;
  /** The image was opened writable and the bitmap not stored since: its data is stale. */
  readonly inUse: boolean;
  /** The bitmap records writes (it is enabled). */
  readonly auto: boolean;
}

/** What directory entries are checked against. */
export interface BitmapLimits {
  /** The image's cluster size. */
  readonly clusterSize: number;
  /** The image's virtual size. */
  readonly virtualSize: number;
}

/** A failure with QEMU's message. */
function invalid(message: string): DenbdError {
  return new DenbdError("invalid", message);
}

/** An unsigned 64-bit big-endian field as a number, or NaN past 2^53. */
function readU64(view: DataView, at: number): number {
  const high = view.getUint32(at);
  return high >= 0x200000 ? NaN : high * 2 ** 32 + view.getUint32(at + 4);
}

/** Store `value` (an integer below 2^53) as an unsigned 64-bit big-endian field. */
function writeU64(view: DataView, at: number, value: number): void {
  view.setUint32(at, Math.floor(value / 2 ** 32));
  view.setUint32(at + 4, value % 2 ** 32);
}

/**
 * Decode the bitmaps extension, with the checks QEMU makes when it opens
 * the image (each one fails the open).
 */
export function decodeBitmapsExtension(data: Uint8Array, clusterSize: number): BitmapsExtension {
  if (data.length !== BITMAPS_EXTENSION_SIZE) {
    throw invalid("bitmaps_ext: Invalid extension length");
  }
  const view = new DataView(data.buffer, data.byteOffset, data.length);
  const count = view.getUint32(0);
  const directorySize = readU64(view, 8);
  const directoryOffset = readU64(view, 16);
  if (view.getUint32(4) !== 0) throw invalid("bitmaps_ext: Reserved field is not zero");
  if (count > MAX_BITMAPS) {
    throw invalid(
      `bitmaps_ext: Image has ${count} bitmaps, exceeding the QEMU supported maximum of ${MAX_BITMAPS}`,
    );
  }
  if (count === 0) throw invalid("found bitmaps extension with zero bitmaps");
  if (!Number.isFinite(directoryOffset) || directoryOffset % clusterSize !== 0) {
    throw invalid("bitmaps_ext: invalid bitmap directory offset");
  }
  if (!(directorySize <= MAX_DIRECTORY_SIZE)) {
    const shown = Number.isFinite(directorySize)
      ? directorySize
      : BigInt.asUintN(64, new DataView(data.buffer, data.byteOffset + 8, 8).getBigUint64(0));
    throw invalid(
      `bitmaps_ext: bitmap directory size (${shown}) exceeds the maximum supported size (${MAX_DIRECTORY_SIZE})`,
    );
  }
  return { count, directorySize, directoryOffset };
}

/** Encode the bitmaps extension. */
export function encodeBitmapsExtension(extension: BitmapsExtension): Uint8Array {
  const data = new Uint8Array(BITMAPS_EXTENSION_SIZE);
  const view = new DataView(data.buffer);
  view.setUint32(0, extension.count);
  writeU64(view, 8, extension.directorySize);
  writeU64(view, 16, extension.directoryOffset);
  return data;
}

/** Bytes a directory entry takes: header, extra data and name, padded to 8. */
export function directoryEntrySize(nameBytes: number, extraDataSize = 0): number {
  return Math.ceil((ENTRY_HEADER_SIZE + extraDataSize + nameBytes) / 8) * 8;
}

/**
 * Entries of the bitmap table of a bitmap of `2^granularityBits` over
 * `virtualSize` bytes: one cluster of data holds `clusterSize * 8` bits.
 */
export function bitmapTableSize(
  virtualSize: number,
  granularityBits: number,
  clusterSize: number,
): number {
  const bits = Math.ceil(virtualSize / 2 ** granularityBits);
  return Math.ceil(Math.ceil(bits / 8) / clusterSize);
}

/**
 * Why a bitmap of `granularity` bytes over `virtualSize` bytes cannot be
 * stored in an image of `clusterSize` clusters (QEMU's constraints and
 * messages), or undefined when it can.
 */
export function bitmapConstraintError(
  name: string,
  granularity: number,
  limits: BitmapLimits,
): string | undefined {
  const bits = Math.log2(granularity);
  if (bits > MAX_GRANULARITY_BITS) {
    return `Granularity exceeds maximum (${2 ** MAX_GRANULARITY_BITS} bytes)`;
  }
  if (bits < MIN_GRANULARITY_BITS) {
    return `Granularity is under minimum (${2 ** MIN_GRANULARITY_BITS} bytes)`;
  }
  if (
    limits.virtualSize > MAX_BITMAP_DATA_BYTES * granularity ||
    limits.virtualSize > MAX_TABLE_ENTRIES * limits.clusterSize * granularity
  ) {
    return "Too much space will be occupied by the bitmap. Use larger granularity";
  }
  if (new TextEncoder().encode(name).length > MAX_NAME_BYTES) {
    return `Name length exceeds maximum (${MAX_NAME_BYTES} characters)`;
  }
  return undefined;
}

/** Whether an entry satisfies QEMU's constraints (its check_dir_entry). */
function entryIsValid(
  fields: { tableOffset: number; tableSize: number; flags: number; type: number; bits: number },
  nameBytes: number,
  limits: BitmapLimits,
): boolean {
  const { tableOffset, tableSize, flags, type, bits } = fields;
  if (
    tableSize === 0 || !(tableOffset > 0) || tableOffset % limits.clusterSize !== 0 ||
    tableSize > MAX_TABLE_ENTRIES || bits > MAX_GRANULARITY_BITS ||
    bits < MIN_GRANULARITY_BITS || (flags & ~KNOWN_FLAGS) !== 0 ||
    nameBytes > MAX_NAME_BYTES || type !== TYPE_DIRTY_TRACKING
  ) {
    return false;
  }
  const dataBytes = tableSize * limits.clusterSize;
  if (dataBytes > MAX_BITMAP_DATA_BYTES) return false;
  // A stale (in_use) bitmap may be too small after a resize; a clean one may not.
  return (flags & FLAG_IN_USE) !== 0 || limits.virtualSize <= dataBytes * 8 * 2 ** bits;
}

/**
 * Decode a bitmap directory of `expectedCount` entries, with QEMU's checks
 * and messages: entries inside the directory and exactly filling it, as
 * many as the extension says, no extra data, each satisfying the
 * constraints, and names unique (QEMU refuses a repeated name when it
 * creates the second bitmap).
 */
export function decodeBitmapDirectory(
  bytes: Uint8Array,
  expectedCount: number,
  limits: BitmapLimits,
): BitmapDirectoryEntry[] {
  if (bytes.length === 0) throw invalid("Requested bitmap directory size is zero");
  if (bytes.length > MAX_DIRECTORY_SIZE) {
    throw invalid("Requested bitmap directory size is too big");
  }
  const broken = () => invalid("Broken bitmap directory");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const entries: BitmapDirectoryEntry[] = [];
  const names = new Set<string>();
  const decoder = new TextDecoder("utf-8", { fatal: true });
  let at = 0;
  while (at < bytes.length) {
    if (at + ENTRY_HEADER_SIZE > bytes.length) throw broken();
    if (entries.length + 1 > expectedCount) {
      throw invalid("More bitmaps found than specified in header extension");
    }
    const tableOffset = readU64(view, at);
    const tableSize = view.getUint32(at + 8);
    const flags = view.getUint32(at + 12);
    const type = view.getUint8(at + 16);
    const bits = view.getUint8(at + 17);
    const nameBytes = view.getUint16(at + 18);
    const extraDataSize = view.getUint32(at + 20);
    const size = directoryEntrySize(nameBytes, extraDataSize);
    if (at + size > bytes.length) throw broken();
    if (extraDataSize !== 0) throw invalid("Bitmap extra data is not supported");
    const nameField = bytes.subarray(
      at + ENTRY_HEADER_SIZE,
      at + ENTRY_HEADER_SIZE + nameBytes,
    );
    let name: string;
    try {
      name = decoder.decode(nameField);
    } catch {
      throw invalid("Bitmap name is not valid UTF-8");
    }
    if (!entryIsValid({ tableOffset, tableSize, flags, type, bits }, nameBytes, limits)) {
      throw invalid(`Bitmap '${name}' doesn't satisfy the constraints`);
    }
    if (nameBytes === 0) throw invalid("Bitmap name cannot be empty");
    if (names.has(name)) throw invalid(`Bitmap already exists: ${name}`);
    names.add(name);
    entries.push({
      name,
      tableOffset,
      tableSize,
      granularityBits: bits,
      inUse: (flags & FLAG_IN_USE) !== 0,
      auto: (flags & FLAG_AUTO) !== 0,
    });
    at += size;
  }
  if (entries.length !== expectedCount) {
    throw invalid("Less bitmaps found than specified in header extension");
  }
  return entries;
}

/** Encode a bitmap directory (entries without extra data, zero padding). */
export function encodeBitmapDirectory(entries: readonly BitmapDirectoryEntry[]): Uint8Array {
  const encoder = new TextEncoder();
  const names = entries.map((entry) => encoder.encode(entry.name));
  const size = names.reduce((total, name) => total + directoryEntrySize(name.length), 0);
  const bytes = new Uint8Array(size);
  const view = new DataView(bytes.buffer);
  let at = 0;
  entries.forEach((entry, index) => {
    const name = names[index];
    writeU64(view, at, entry.tableOffset);
    view.setUint32(at + 8, entry.tableSize);
    view.setUint32(at + 12, (entry.inUse ? FLAG_IN_USE : 0) | (entry.auto ? FLAG_AUTO : 0));
    view.setUint8(at + 16, TYPE_DIRTY_TRACKING);
    view.setUint8(at + 17, entry.granularityBits);
    view.setUint16(at + 18, name.length);
    bytes.set(name, at + ENTRY_HEADER_SIZE);
    at += directoryEntrySize(name.length);
  });
  return bytes;
}

/**
 * A bitmap table entry: the offset of a cluster of bitmap data, or, with no
 * cluster, whether the bits it covers are all zeroes or all ones.
 */
export type BitmapTableEntry =
  | { readonly kind: "data"; readonly offset: number }
  | { readonly kind: "zeroes" }
  | { readonly kind: "ones" };

/**
 * Decode a bitmap table, with QEMU's entry checks: reserved bits (1-8,
 * 56-63) clear, a data offset cluster aligned and without the all-ones bit.
 * Returns undefined when an entry is invalid.
 */
export function decodeBitmapTable(
  bytes: Uint8Array,
  clusterSize: number,
): BitmapTableEntry[] | undefined {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const entries: BitmapTableEntry[] = [];
  for (let at = 0; at + 8 <= bytes.length; at += 8) {
    const high = view.getUint32(at);
    const low = view.getUint32(at + 4);
    if ((high & 0xff000000) !== 0 || (low & 0x1fe) !== 0) return undefined;
    const offset = high * 2 ** 32 + ((low & ~0x1ff) >>> 0);
    const allOnes = (low & 1) !== 0;
    if (offset === 0) {
      entries.push({ kind: allOnes ? "ones" : "zeroes" });
      continue;
    }
    if (allOnes || offset % clusterSize !== 0) return undefined;
    entries.push({ kind: "data", offset });
  }
  return entries;
}

/** Encode a bitmap table whose entries are data cluster offsets, 0 for all-zero clusters. */
export function encodeBitmapTable(offsets: readonly number[]): Uint8Array {
  const bytes = new Uint8Array(offsets.length * 8);
  const view = new DataView(bytes.buffer);
  offsets.forEach((offset, index) => writeU64(view, index * 8, offset));
  return bytes;
}
