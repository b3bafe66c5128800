/**
 * What one piece of a qcow2 image (a cluster, or a subcluster with extended
 * L2 entries) is, decoded from its L2 entry without allocating: stored data
 * at a host offset, zeroes, a compressed cluster, or nothing (read from the
 * backing file).
 *
 * @module
 */

/** The state of one piece of the virtual disk. */
export const PieceKind = {
  /** Nothing here: reads fall through to the backing file (or zeroes). */
  Unallocated: 0,
  /** Reads as zeroes (a zero cluster or subcluster). */
  Zero: 1,
  /** Stored uncompressed at a host offset. */
  Data: 2,
  /** Stored compressed; the whole cluster is decompressed to read it. */
  Compressed: 3,
} as const;
/** One of {@linkcode PieceKind}'s values. */
export type PieceKind = typeof PieceKind[keyof typeof PieceKind];

/** L2 entry bit 63 (high word bit 31): the refcount is exactly one. */
export const COPIED_FLAG = 0x80000000;
/** L2 entry bit 62 (high word bit 30): a compressed cluster. */
export const COMPRESSED_FLAG = 0x40000000;
/** L2 entry bit 0: reads as zeroes (standard entries of version 3). */
export const ZERO_FLAG = 1;

/** Host offset bits 9..55 of an entry given as its two 32-bit halves. */
export function hostOffsetOf(high: number, low: number): number {
  return (high & 0x00ffffff) * 0x1_0000_0000 + ((low & 0xfffffe00) >>> 0);
}

/** A compressed cluster's place: host byte offset and the bytes to read. */
export interface CompressedPlace {
  /** Host byte offset of the compressed data (not aligned). */
  readonly offset: number;
  /** Bytes of compressed data, as the entry's sector count says. */
  readonly length: number;
}

/** Where a compressed cluster's data is, from the entry's halves and the cluster bits. */
export function compressedPlace(high: number, low: number, clusterBits: number): CompressedPlace {
  const offsetBits = 70 - clusterBits; // 62 - (cluster_bits - 8), always above 32
  const offset = (high & ((1 << (offsetBits - 32)) - 1)) * 0x1_0000_0000 + (low >>> 0);
  const sectors = (high >>> (offsetBits - 32)) & ((1 << (clusterBits - 8)) - 1);
  return { offset, length: (sectors + 1) * 512 - (offset % 512) };
}

/**
 * The kind of subcluster `sub` (0 for a standard entry) of an entry, given
 * the entry's halves and, with extended L2, its bitmap halves (zero bits in
 * `zeroBits`, allocation bits in `allocBits`).
 */
export function pieceKind(
  high: number,
  low: number,
  extended: boolean,
  zeroBits: number,
  allocBits: number,
  sub: number,
): PieceKind {
  if (high & COMPRESSED_FLAG) return PieceKind.Compressed;
  if (!extended) {
    if (low & ZERO_FLAG) return PieceKind.Zero;
    return hostOffsetOf(high, low) ? PieceKind.Data : PieceKind.Unallocated;
  }
  if ((allocBits >>> sub) & 1) return PieceKind.Data;
  if ((zeroBits >>> sub) & 1) return PieceKind.Zero;
  return PieceKind.Unallocated;
}
