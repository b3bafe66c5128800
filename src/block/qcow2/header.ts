/**
 * The qcow2 header (versions 2 and 3) and its extensions: decoding with
 * QEMU's checks and messages, and encoding back for a rewrite with every
 * extension and unknown header field kept verbatim.
 *
 * @module
 */

import { DenbdError } from "../../errors.ts";

/** The magic "QFI\xfb". */
export const QCOW2_MAGIC = 0x514649fb;
/** Bytes of a version 2 header. */
export const V2_HEADER_LENGTH = 72;
/** Bytes of a version 3 header that this code knows (through the compression type, padded). */
export const V3_HEADER_LENGTH = 112;
/** Smallest and largest cluster_bits QEMU accepts. */
export const MIN_CLUSTER_BITS = 9;
/** Largest cluster_bits QEMU accepts (2 MiB clusters). */
export const MAX_CLUSTER_BITS = 21;
/** QEMU's bound on the active L1 table, in bytes. */
export const MAX_L1_BYTES = 32 << 20;
/** QEMU's bound on the refcount table, in bytes. */
export const MAX_REFCOUNT_TABLE_BYTES = 8 << 20;
/** Longest backing file name QEMU accepts. */
export const MAX_BACKING_NAME = 1023;
/** Largest virtual size this code represents exactly (QEMU's own limit is larger). */
export const MAX_VIRTUAL_SIZE = 2 ** 52;

/** Incompatible feature bits. */
export const INCOMPAT_DIRTY = 1n << 0n;
/** The image is corrupt: open read-only only. */
export const INCOMPAT_CORRUPT = 1n << 1n;
/** Data lives in an external data file. */
export const INCOMPAT_DATA_FILE = 1n << 2n;
/** The compression type field is not zlib. */
export const INCOMPAT_COMPRESSION = 1n << 3n;
/** L2 entries are 128 bits with subcluster bitmaps. */
export const INCOMPAT_EXTENDED_L2 = 1n << 4n;
const KNOWN_INCOMPAT = (1n << 5n) - 1n;
/** Compatible feature bit 0: lazy refcounts. */
export const COMPAT_LAZY_REFCOUNTS = 1n;
/** Autoclear bit 0: the bitmaps extension is consistent. */
export const AUTOCLEAR_BITMAPS = 1n;
/** Autoclear bits this code keeps when rewriting the header (a writer clears the others). */
export const KNOWN_AUTOCLEAR = 3n;

/** Header extension types. */
export const EXT_END = 0;
/** The backing file's format name. */
export const EXT_BACKING_FORMAT = 0xe2792aca;
/** Names of the feature bits. */
export const EXT_FEATURE_NAMES = 0x6803f857;
/** Persistent dirty bitmaps. */
export const EXT_BITMAPS = 0x23852875;
/** Full-disk encryption header pointer. */
export const EXT_CRYPTO = 0x0537be77;
/** External data file name. */
export const EXT_DATA_FILE = 0x44415441;

/** One header extension, as stored. */
export interface HeaderExtension {
  /** The extension's type. */
  readonly type: number;
  /** Its data (without padding). */
  readonly data: Uint8Array;
}

/** A decoded and validated qcow2 header. */
export interface Qcow2Header {
  /** 2 or 3. */
  readonly version: 2 | 3;
  /** log2 of the cluster size. */
  readonly clusterBits: number;
  /** Bytes in a cluster. */
  readonly clusterSize: number;
  /** The virtual disk size in bytes. */
  readonly size: number;
  /** 0 none, 1 AES, 2 LUKS. */
  readonly cryptMethod: number;
  /** Entries in the active L1 table. */
  readonly l1Size: number;
  /** Host offset of the active L1 table. */
  readonly l1TableOffset: number;
  /** Host offset of the refcount table. */
  readonly refcountTableOffset: number;
  /** Clusters of the refcount table. */
  readonly refcountTableClusters: number;
  /** Internal snapshots. */
  readonly snapshotCount: number;
  /** Host offset of the snapshot table. */
  readonly snapshotsOffset: number;
  /** Incompatible feature bits. */
  readonly incompatibleFeatures: bigint;
  /** Compatible feature bits. */
  readonly compatibleFeatures: bigint;
  /** Autoclear feature bits. */
  readonly autoclearFeatures: bigint;
  /** log2 of the refcount width in bits (0..6). */
  readonly refcountOrder: number;
  /** Bytes of the header proper (72 for version 2). */
  readonly headerLength: number;
  /** 0 zlib, 1 zstd. */
  readonly compressionType: number;
  /** Header bytes past the fields known here (up to headerLength), kept verbatim. */
  readonly unknownFields: Uint8Array;
  /** Every extension in order, unknown ones included. */
  readonly extensions: readonly HeaderExtension[];
  /** The backing file name as stored, if any. */
  readonly backingFile: string | undefined;
}

/** An error for an image that is not a valid qcow2 image. */
export function invalidImage(message: string): DenbdError {
  return new DenbdError("invalid", message);
}

/** `value` as a number, or Infinity beyond 2^53 (any such offset fails the range checks). */
function u64(view: DataView, at: number): number {
  const value = view.getBigUint64(at);
  return value > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(value);
}

/** Whether a table of `bytes` at `offset` is cluster aligned and within 2^53. */
function validTableOffset(offset: number, bytes: number, clusterSize: number): boolean {
  return offset % clusterSize === 0 && offset + bytes <= Number.MAX_SAFE_INTEGER;
}

/** The bytes needed to decide the cluster size: read these first, then the whole first cluster. */
export const HEADER_PROBE_BYTES = 512;

/** The cluster size named by the first bytes of an image (validated), to read cluster 0 whole. */
export function clusterSizeOf(first: Uint8Array): number {
  const view = new DataView(first.buffer, first.byteOffset, first.byteLength);
  if (first.length < V2_HEADER_LENGTH || view.getUint32(0) !== QCOW2_MAGIC) {
    throw invalidImage("Image is not in qcow2 format");
  }
  const version = view.getUint32(4);
  if (version !== 2 && version !== 3) throw invalidImage(`Unsupported qcow2 version ${version}`);
  const clusterBits = view.getUint32(20);
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw invalidImage(`Unsupported cluster size: 2^${clusterBits}`);
  }
  return 2 ** clusterBits;
}

/** The names of feature bits from a feature name table extension, keyed "type:bit". */
function featureNames(extensions: readonly HeaderExtension[]): Map<string, string> {
  const names = new Map<string, string>();
  const table = extensions.find((extension) => extension.type === EXT_FEATURE_NAMES);
  if (!table) return names;
  for (let at = 0; at + 48 <= table.data.length; at += 48) {
    const raw = table.data.subarray(at + 2, at + 48);
    const end = raw.indexOf(0);
    names.set(
      `${table.data[at]}:${table.data[at + 1]}`,
      new TextDecoder().decode(end < 0 ? raw : raw.subarray(0, end)),
    );
  }
  return names;
}

/**
 * Decode and validate the header in `cluster0` (the image's first cluster,
 * or all of the file if it is shorter), with QEMU's messages.
 */
export function decodeHeader(cluster0: Uint8Array): Qcow2Header {
  const clusterSize = clusterSizeOf(cluster0);
  const view = new DataView(cluster0.buffer, cluster0.byteOffset, cluster0.byteLength);
  const version = view.getUint32(4) as 2 | 3;
  const clusterBits = view.getUint32(20);
  let incompatibleFeatures = 0n, compatibleFeatures = 0n, autoclearFeatures = 0n;
  let refcountOrder = 4, headerLength = V2_HEADER_LENGTH, compressionType = 0;
  if (version === 3) {
    if (cluster0.length < 104) throw invalidImage("qcow2 header too short");
    incompatibleFeatures = view.getBigUint64(72);
    compatibleFeatures = view.getBigUint64(80);
    autoclearFeatures = view.getBigUint64(88);
    refcountOrder = view.getUint32(96);
    headerLength = view.getUint32(100);
    if (headerLength < 104) throw invalidImage("qcow2 header too short");
    if (headerLength > clusterSize) throw invalidImage("qcow2 header exceeds cluster size");
    if (headerLength > cluster0.length) throw invalidImage("qcow2 header too short");
    if (headerLength > 104) compressionType = cluster0[104];
  }
  const knownEnd = Math.min(headerLength, 105);
  const unknownFields = cluster0.slice(knownEnd, headerLength);
  const backingFileOffset = u64(view, 8);
  const backingFileSize = view.getUint32(16);
  const extensionsEnd = backingFileOffset ? Math.min(backingFileOffset, clusterSize) : clusterSize;
  if (backingFileOffset > clusterSize || backingFileOffset + backingFileSize > clusterSize) {
    throw invalidImage("Invalid backing file offset");
  }
  const extensions = decodeExtensions(
    cluster0,
    headerLength,
    Math.min(extensionsEnd, cluster0.length),
  );
  const unknownIncompat = incompatibleFeatures & ~KNOWN_INCOMPAT;
  if (unknownIncompat) {
    const names = featureNames(extensions);
    const listed: string[] = [];
    for (let bit = 0n; bit < 64n; bit++) {
      if (!(unknownIncompat & (1n << bit))) continue;
      listed.push(
        names.get(`0:${bit}`) ?? `Unknown incompatible feature: ${(1n << bit).toString(16)}`,
      );
    }
    throw new DenbdError("not-supported", `Unsupported qcow2 feature(s): ${listed.join(", ")}`);
  }
  if (refcountOrder > 6) {
    throw invalidImage("Reference count entry width too large; may not exceed 64 bits");
  }
  if (compressionType > 1) {
    throw invalidImage(`qcow2: unknown compression type: ${compressionType}`);
  }
  if (compressionType !== 0 && !(incompatibleFeatures & INCOMPAT_COMPRESSION)) {
    throw invalidImage("qcow2: Compression type incompatible feature bit must be set");
  }
  if (compressionType === 0 && (incompatibleFeatures & INCOMPAT_COMPRESSION)) {
    throw invalidImage("qcow2: Compression type incompatible feature bit must not be set");
  }
  const cryptMethod = view.getUint32(32);
  if (cryptMethod > 2) throw invalidImage(`Unsupported encryption method ${cryptMethod}`);
  if ((incompatibleFeatures & INCOMPAT_EXTENDED_L2) && clusterBits < 14) {
    throw invalidImage(
      "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes",
    );
  }
  const size = u64(view, 24);
  if (size > MAX_VIRTUAL_SIZE) throw invalidImage("Image is too big");
  const l1Size = view.getUint32(36);
  if (l1Size > MAX_L1_BYTES / 8) throw invalidImage("Active L1 table too large");
  const l2Entries = clusterSize / ((incompatibleFeatures & INCOMPAT_EXTENDED_L2) ? 16 : 8);
  if (l1Size < Math.ceil(size / (clusterSize * l2Entries))) {
    throw invalidImage("L1 table is too small");
  }
  const l1TableOffset = u64(view, 40);
  if (!validTableOffset(l1TableOffset, l1Size * 8, clusterSize)) {
    throw invalidImage("Active L1 table offset invalid");
  }
  const refcountTableOffset = u64(view, 48);
  const refcountTableClusters = view.getUint32(56);
  if (refcountTableClusters > MAX_REFCOUNT_TABLE_BYTES / clusterSize) {
    throw invalidImage("Reference count table too large");
  }
  if (
    !validTableOffset(refcountTableOffset, refcountTableClusters * clusterSize, clusterSize)
  ) {
    throw invalidImage("Reference count table offset invalid");
  }
  const snapshotCount = view.getUint32(60);
  const snapshotsOffset = u64(view, 64);
  if (snapshotCount > 65536) throw invalidImage("Too many snapshots");
  if (snapshotCount && !validTableOffset(snapshotsOffset, snapshotCount * 40, clusterSize)) {
    throw invalidImage("Snapshot table offset invalid");
  }
  let backingFile: string | undefined;
  if (backingFileOffset) {
    if (backingFileSize > MAX_BACKING_NAME) throw invalidImage("Backing file name too long");
    if (backingFileOffset + backingFileSize > cluster0.length) {
      throw invalidImage("Invalid backing file offset");
    }
    backingFile = new TextDecoder().decode(
      cluster0.subarray(backingFileOffset, backingFileOffset + backingFileSize),
    );
  }
  return {
    version,
    clusterBits,
    clusterSize,
    size,
    cryptMethod,
    l1Size,
    l1TableOffset,
    refcountTableOffset,
    refcountTableClusters,
    snapshotCount,
    snapshotsOffset,
    incompatibleFeatures,
    compatibleFeatures,
    autoclearFeatures,
    refcountOrder,
    headerLength,
    compressionType,
    unknownFields,
    extensions,
    backingFile,
  };
}

/** The extensions between `start` and `end` in `cluster0`, up to the end marker. */
function decodeExtensions(cluster0: Uint8Array, start: number, end: number): HeaderExtension[] {
  const view = new DataView(cluster0.buffer, cluster0.byteOffset, cluster0.byteLength);
  const extensions: HeaderExtension[] = [];
  let at = start;
  while (at + 8 <= end) {
    const type = view.getUint32(at);
    const length = view.getUint32(at + 4);
    if (type === EXT_END) break;
    at += 8;
    if (length > end - at) throw invalidImage("qcow2: Header extension too large");
    extensions.push({ type, data: cluster0.slice(at, at + length) });
    at += Math.ceil(length / 8) * 8;
  }
  return extensions;
}

/** The data of the first extension of `type`, if any. */
export function extensionData(header: Qcow2Header, type: number): Uint8Array | undefined {
  return header.extensions.find((extension) => extension.type === type)?.data;
}

/**
 * The header with its extensions, end marker and backing file name, as it is
 * written at offset 0; fails if it does not fit in the first cluster.
 */
export function encodeHeader(header: Qcow2Header): Uint8Array {
  const extensionBytes = header.extensions.reduce(
    (sum, extension) => sum + 8 + Math.ceil(extension.data.length / 8) * 8,
    0,
  );
  const name = header.backingFile === undefined
    ? new Uint8Array()
    : new TextEncoder().encode(header.backingFile);
  const backingOffset = header.headerLength + extensionBytes + 8;
  const total = backingOffset + name.length;
  if (total > header.clusterSize) {
    throw new DenbdError("no-space", "qcow2 header does not fit in the first cluster");
  }
  const bytes = new Uint8Array(total);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, QCOW2_MAGIC);
  view.setUint32(4, header.version);
  view.setBigUint64(8, BigInt(name.length ? backingOffset : 0));
  view.setUint32(16, name.length);
  view.setUint32(20, header.clusterBits);
  view.setBigUint64(24, BigInt(header.size));
  view.setUint32(32, header.cryptMethod);
  view.setUint32(36, header.l1Size);
  view.setBigUint64(40, BigInt(header.l1TableOffset));
  view.setBigUint64(48, BigInt(header.refcountTableOffset));
  view.setUint32(56, header.refcountTableClusters);
  view.setUint32(60, header.snapshotCount);
  view.setBigUint64(64, BigInt(header.snapshotsOffset));
  if (header.version === 3) {
    view.setBigUint64(72, header.incompatibleFeatures);
    view.setBigUint64(80, header.compatibleFeatures);
    view.setBigUint64(88, header.autoclearFeatures);
    view.setUint32(96, header.refcountOrder);
    view.setUint32(100, header.headerLength);
    if (header.headerLength > 104) bytes[104] = header.compressionType;
    bytes.set(header.unknownFields, Math.min(header.headerLength, 105));
  }
  let at = header.headerLength;
  for (const extension of header.extensions) {
    view.setUint32(at, extension.type);
    view.setUint32(at + 4, extension.data.length);
    bytes.set(extension.data, at + 8);
    at += 8 + Math.ceil(extension.data.length / 8) * 8;
  }
  at += 8; // the end marker: type 0, length 0
  bytes.set(name, at);
  return bytes;
}
