/**
 * QEMU's qcow2 format driver: a node over an image file (its `file` child)
 * with an optional backing node (its `backing` child), versions 2 and 3,
 * any cluster size QEMU accepts, refcounts of any width, zero and compressed
 * clusters, extended L2 entries (subclusters), and copy-on-write writes.
 *
 * The L1 table is held in memory (QEMU's bound: 32 MiB); L2 tables and
 * refcount blocks go through bounded write-back caches. Changed metadata
 * reaches the file in QEMU's order: data before the L2 entry that points to
 * it, refcounts (flushed) before the L2 tables that use them, and a new L2
 * table before the L1 entry that points to it; a freed cluster's refcount
 * drops only after the L2 tables no longer pointing to it were written.
 * A flush (or a FUA write) makes everything durable.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { MemoryNode } from "../memory.ts";
 * import { createQcow2, Qcow2Node } from "./qcow2-node.ts";
 * const file = new MemoryNode(0, { growable: true });
 * await createQcow2(file, { size: 1 << 20 });
 * const image = await Qcow2Node.open(file);
 * await image.write(4096, new Uint8Array([7]));
 * const into = new Uint8Array(1);
 * await image.read(4096, into);
 * assert.equal(into[0], 7);
 * ```
 * @module
 */

import { AsyncLocalStorage } from "node:async_hooks";
import { DenbdError } from "../../errors.ts";
import { CheckedNode } from "../checked-node.ts";
import {
  backingPermissions,
  type ChildPermissionPolicy,
  type PermissionRequest,
  storagePermissions,
} from "../permissions.ts";
import { RangeLock } from "../range-lock.ts";
import type {
  BlockExtent,
  BlockNode,
  NodeCapabilities,
  NodeChild,
  WriteOptions,
  ZeroOptions,
} from "../node.ts";
import { type CompressionType, decompressCluster } from "./compression.ts";
import {
  AUTOCLEAR_BITMAPS,
  clusterSizeOf,
  COMPAT_LAZY_REFCOUNTS,
  decodeHeader,
  encodeHeader,
  EXT_BACKING_FORMAT,
  EXT_BITMAPS,
  EXT_DATA_FILE,
  extensionData,
  HEADER_PROBE_BYTES,
  INCOMPAT_CORRUPT,
  INCOMPAT_DATA_FILE,
  INCOMPAT_DIRTY,
  INCOMPAT_EXTENDED_L2,
  KNOWN_AUTOCLEAR,
  type Qcow2Header,
} from "./header.ts";
import {
  COMPRESSED_FLAG,
  compressedPlace,
  COPIED_FLAG,
  hostOffsetOf,
  PieceKind,
  pieceKind,
  ZERO_FLAG,
} from "./l2-entry.ts";
import { corruptImage, CorruptImageError, offsetField, Refcounts, setU64 } from "./refcounts.ts";
import { checkSnapshotL1, type Qcow2Snapshot, readSnapshotTable } from "./snapshots.ts";
import { TableCache } from "./table-cache.ts";

export { createQcow2 } from "./create.ts";

/** Where a qcow2 image says its backing file is. */
export interface BackingReference {
  /** The name exactly as stored in the image (may be relative to the image). */
  readonly filename: string;
  /** The backing format extension, if any. */
  readonly format: string | undefined;
}

/** How {@linkcode Qcow2Node.open} opens an image. */
export interface Qcow2OpenOptions {
  /** Refuse writes (also implied by a read-only file or a snapshot). */
  readonly readOnly?: boolean;
  /** QEMU's discard=unmap: discards free clusters; default "ignore". */
  readonly discard?: "ignore" | "unmap";
  /**
   * The backing node. A node: use it. null: no backing (reads of
   * unallocated clusters give zeroes). undefined: if the header names a
   * backing file, call `openBacking` (refused when it is absent).
   */
  readonly backing?: BlockNode | null;
  /** Opens the backing file the header names (when `backing` is undefined). */
  readonly openBacking?: (reference: BackingReference) => Promise<BlockNode>;
  /** Open read-only at an internal snapshot instead of the active L1 (qemu-nbd -l). */
  readonly snapshot?: {
    readonly l1TableOffset: number;
    readonly l1Size: number;
    readonly size: number;
  };
}

/** What `qemu-img info` and query-named-block-nodes say of a qcow2 image. */
export interface Qcow2ImageInfo {
  /** 2 (compat 0.10) or 3 (compat 1.1). */
  readonly version: 2 | 3;
  /** Bytes in a cluster. */
  readonly clusterSize: number;
  /** Bits of a refcount. */
  readonly refcountBits: number;
  /** The lazy refcounts compatible feature. */
  readonly lazyRefcounts: boolean;
  /** The corrupt incompatible feature. */
  readonly corrupt: boolean;
  /** L2 entries with subclusters. */
  readonly extendedL2: boolean;
  /** How compressed clusters are compressed. */
  readonly compressionType: CompressionType;
  /** The external data file's name, if the image has one. */
  readonly dataFile: string | undefined;
}

/** What the persistent-bitmap code (src/block/qcow2/bitmaps.ts) needs from the image. */
export interface Qcow2Metadata {
  /** The image file (read/write metadata clusters through it). */
  readonly file: BlockNode;
  /** Bytes in a cluster. */
  readonly clusterSize: number;
  /** The virtual disk size. */
  readonly virtualSize: number;
  /** Whether the image was opened writable. */
  readonly writable: boolean;
  /** Allocate `count` contiguous host clusters with refcount 1 (file grows as needed); returns the offset. */
  allocateClusters(count: number): Promise<number>;
  /** Drop one reference from each of `count` clusters from `offset` (refcount 0 frees them). */
  freeClusters(offset: number, count: number): Promise<void>;
  /** Whether host range [offset, offset+length) lies inside the file and outside cluster 0. */
  isValidMetadataRange(offset: number, length: number): boolean;
  /** The bitmaps header extension's data (24 bytes), if the image has one. */
  readonly bitmapsExtension: Uint8Array | undefined;
  /** Whether autoclear bit 0 (bitmaps consistent) was set at open. */
  readonly bitmapsConsistent: boolean;
  /** Rewrite the header with this bitmaps extension (undefined removes it) and autoclear bit 0 = consistent; durable when it resolves. */
  writeBitmapsExtension(data: Uint8Array | undefined, consistent: boolean): Promise<void>;
}

/** A contiguous stretch of a request with one kind of source. */
/** What one piece (a cluster, or a subcluster of an extended L2 entry) is, without its place. */
type Piece = Omit<Run, "offset" | "length">;

interface Run {
  kind: PieceKind;
  /** Virtual offset of the run's start. */
  offset: number;
  /** Bytes in the run. */
  length: number;
  /** Host offset of the run's start (Data), or of the compressed cluster's entry (Compressed). */
  host: number;
  /** For Compressed: the entry halves. */
  high: number;
  low: number;
}

/** Budget of the L2 cache in bytes (QEMU's default maximum on Linux). */
const L2_CACHE_BYTES = 32 << 20;
/** Most extents one blockStatus call returns. */
const MAX_EXTENTS = 1024;
/** Changed metadata tables that may wait for a flush before they are written back anyway. */
const MAX_DIRTY_TABLES = 32;
/** Every subcluster of a cluster. */
const ALL_SUBCLUSTERS = 0xffffffff;

/** The bits of subclusters [from, to) of a cluster (0 <= from <= to <= 32). */
function subclusterMask(from: number, to: number): number {
  const upTo = to >= 32 ? ALL_SUBCLUSTERS : (1 << to) - 1;
  return (upTo & ~((1 << from) - 1)) >>> 0;
}

/** Most pieces one blockStatus call looks at. */
const MAX_STATUS_PIECES = 1 << 18;

/** A qcow2 image as a block node. */
export class Qcow2Node extends CheckedNode implements ChildPermissionPolicy {
  /** The image file and, when present, the backing node. */
  readonly children: readonly NodeChild[];
  /** Writable unless opened read-only; discards free space only with discard=unmap. */
  readonly capabilities: NodeCapabilities;
  /** Any byte range is accepted (partial clusters are read-modify-written). */
  readonly requestAlignment = 1;
  /** What the header names as the backing file (even when overridden). */
  readonly backingReference: BackingReference | undefined;
  /** The backing node, or null. */
  readonly backing: BlockNode | null;
  /** Facts about the image for info-style output. */
  readonly info: Qcow2ImageInfo;
  /** Internal snapshots, from the snapshot table read at open. */
  readonly snapshots: readonly Qcow2Snapshot[];
  /** What the persistent-bitmap code uses. */
  readonly metadata: Qcow2Metadata;

  readonly #file: BlockNode;
  #header: Qcow2Header;
  readonly #size: number;
  readonly #clusterSize: number;
  readonly #clusterBits: number;
  readonly #extended: boolean;
  readonly #entryBytes: number;
  readonly #l2Entries: number;
  /** The piece size: a subcluster with extended L2, else a cluster. */
  readonly #pieceSize: number;
  readonly #l1: DataView;
  readonly #l1Offset: number;
  readonly #l2Cache: TableCache;
  readonly #refcounts: Refcounts | undefined;
  readonly #compression: CompressionType;
  readonly #discard: "ignore" | "unmap";
  /** Serialises every metadata change. */
  readonly #metadataLock = new RangeLock();
  readonly #bitmapsConsistentAtOpen: boolean;
  /** Set when corruption was found while writing: no further change is made. */
  #broken: DenbdError | undefined;
  #lastCompressed: { host: number; data: Uint8Array } | undefined;
  /** Reads in flight, which a cluster being freed waits for. */
  readonly #reads = new Set<Promise<void>>();
  #closed = false;

  private constructor(
    file: BlockNode,
    header: Qcow2Header,
    l1: Uint8Array,
    l1Offset: number,
    size: number,
    backing: BlockNode | null,
    refcounts: Refcounts | undefined,
    snapshots: readonly Qcow2Snapshot[],
    options: Qcow2OpenOptions,
  ) {
    super();
    this.#file = file;
    this.snapshots = snapshots;
    this.#header = header;
    this.#size = size;
    this.#clusterSize = header.clusterSize;
    this.#clusterBits = header.clusterBits;
    this.#extended = (header.incompatibleFeatures & INCOMPAT_EXTENDED_L2) !== 0n;
    this.#entryBytes = this.#extended ? 16 : 8;
    this.#l2Entries = header.clusterSize / this.#entryBytes;
    this.#pieceSize = this.#extended ? header.clusterSize / 32 : header.clusterSize;
    this.#l1 = new DataView(l1.buffer, l1.byteOffset, l1.byteLength);
    this.#l1Offset = l1Offset;
    this.#l2Cache = new TableCache(
      file,
      header.clusterSize,
      Math.max(16, Math.floor(L2_CACHE_BYTES / header.clusterSize)),
    );
    this.#refcounts = refcounts;
    this.#compression = header.compressionType === 1 ? "zstd" : "zlib";
    this.#discard = options.discard ?? "ignore";
    this.backing = backing;
    this.#bitmapsConsistentAtOpen = (header.autoclearFeatures & AUTOCLEAR_BITMAPS) !== 0n;
    const writable = refcounts !== undefined;
    this.capabilities = {
      writable,
      trim: writable && this.#discard === "unmap",
      fastZero: writable && header.version === 3,
      cache: file.capabilities.cache,
      multiConn: true,
      blockStatus: true,
    };
    this.children = backing
      ? [{ role: "file", node: file }, { role: "backing", node: backing }]
      : [{ role: "file", node: file }];
    const format = extensionData(header, EXT_BACKING_FORMAT);
    this.backingReference = header.backingFile === undefined ? undefined : {
      filename: header.backingFile,
      format: format ? new TextDecoder().decode(format) : undefined,
    };
    const dataFile = extensionData(header, EXT_DATA_FILE);
    this.info = {
      version: header.version,
      clusterSize: header.clusterSize,
      refcountBits: 1 << header.refcountOrder,
      lazyRefcounts: (header.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0n,
      corrupt: (header.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n,
      extendedL2: this.#extended,
      compressionType: this.#compression,
      dataFile: dataFile ? new TextDecoder().decode(dataFile) : undefined,
    };
    this.metadata = this.#metadataView();
  }

  /**
   * Open the qcow2 image in `file`, refusing (with QEMU's messages) what
   * cannot be read correctly: encryption, external data files, unknown
   * incompatible features, a corrupt image opened writable, a dirty one
   * opened writable.
   */
  static async open(file: BlockNode, options: Qcow2OpenOptions = {}): Promise<Qcow2Node> {
    const probe = new Uint8Array(Math.min(HEADER_PROBE_BYTES, file.size));
    await file.read(0, probe);
    const clusterSize = clusterSizeOf(probe);
    const cluster0 = new Uint8Array(Math.min(clusterSize, file.size));
    await file.read(0, cluster0);
    const header = decodeHeader(cluster0);
    if (header.cryptMethod !== 0) {
      throw new DenbdError(
        "not-supported",
        `qcow2: encrypted images (${header.cryptMethod === 1 ? "AES" : "LUKS"}) are not supported`,
      );
    }
    if (header.incompatibleFeatures & INCOMPAT_DATA_FILE) {
      throw new DenbdError(
        "not-supported",
        "qcow2: images with an external data file are not supported",
      );
    }
    const readOnly = Boolean(options.readOnly) || !file.capabilities.writable ||
      options.snapshot !== undefined;
    if (!readOnly && (header.incompatibleFeatures & INCOMPAT_CORRUPT)) {
      throw new DenbdError(
        "read-only",
        "qcow2: Image is corrupt; cannot be opened read/write",
      );
    }
    if (!readOnly && (header.incompatibleFeatures & INCOMPAT_DIRTY)) {
      throw new DenbdError(
        "not-supported",
        "qcow2: the image is dirty (lazy refcounts were not written back); " +
          "repair it with 'qemu-img check -r all' or open it read-only",
      );
    }
    // A snapshot's L1 table is checked as QEMU checks it when loading one
    // (bounded in size before it is read); the active one was checked with the header.
    if (options.snapshot) checkSnapshotL1(options.snapshot, clusterSize, file.size);
    const l1Offset = options.snapshot?.l1TableOffset ?? header.l1TableOffset;
    const l1Size = options.snapshot?.l1Size ?? header.l1Size;
    const size = options.snapshot?.size ?? header.size;
    if (l1Size && (l1Offset < clusterSize || l1Offset % clusterSize !== 0)) {
      throw new DenbdError("invalid", "Active L1 table offset invalid");
    }
    if (l1Offset + l1Size * 8 > file.size) {
      throw new DenbdError(
        "invalid",
        `qcow2: the L1 table (0x${l1Offset.toString(16)}) lies beyond the end of the image file`,
      );
    }
    const l1 = new Uint8Array(l1Size * 8);
    await file.read(l1Offset, l1);
    const opened: { node?: Qcow2Node } = {};
    const refcounts = readOnly ? undefined : await Refcounts.load(file, {
      clusterSize,
      refcountOrder: header.refcountOrder,
      tableOffset: header.refcountTableOffset,
      tableClusters: header.refcountTableClusters,
    }, (tableOffset, tableClusters) => opened.node!.#moveRefcountTable(tableOffset, tableClusters));
    const snapshots = await readSnapshotTable(file, {
      snapshotsOffset: header.snapshotsOffset,
      snapshotCount: header.snapshotCount,
      clusterSize,
      version: header.version,
      virtualSize: header.size,
    });
    const backing = await openBackingOf(header, options);
    const node = new Qcow2Node(
      file,
      header,
      l1,
      l1Offset,
      size,
      backing,
      refcounts,
      snapshots,
      options,
    );
    opened.node = node;
    if (!readOnly && (header.autoclearFeatures & ~KNOWN_AUTOCLEAR)) {
      await node.#rewriteHeader({
        ...header,
        autoclearFeatures: header.autoclearFeatures & KNOWN_AUTOCLEAR,
      });
    }
    return node;
  }

  /**
   * What a user's `request` means for the children: the image file gets what
   * a format with metadata needs (it writes metadata even for a reader when
   * writable), the backing node what copy-on-write needs.
   */
  childPermissions(child: NodeChild, request: PermissionRequest): PermissionRequest {
    return child.role === "backing"
      ? backingPermissions(request)
      : storagePermissions(request, this.capabilities.writable);
  }

  /** The virtual disk size. */
  get size(): number {
    return this.#size;
  }

  /**
   * Fill `into` at once when every piece's L2 table is cached and the bytes
   * are at hand: stored data in the file's page cache (contiguous pieces in
   * one read), zero pieces, and what lies below from a backing node that
   * can read at once; false otherwise, and on corruption (the asynchronous
   * read reports it).
   */
  protected override driverReadNow(offset: number, into: Uint8Array): boolean {
    try {
      let pending: { host: number; start: number; length: number } | undefined;
      const readPending = () => {
        if (!pending) return true;
        const { host, start, length } = pending;
        pending = undefined;
        this.#checkHostRange(host, length);
        return this.#file.readNow(host, into.subarray(start, start + length));
      };
      for (let done = 0; done < into.length;) {
        const at = offset + done;
        const length = Math.min(this.#pieceSize - (at % this.#pieceSize), into.length - done);
        const piece = this.#pieceNow(at);
        if (!piece || piece.kind === PieceKind.Compressed) return false;
        if (
          piece.kind === PieceKind.Data && pending && pending.host + pending.length === piece.host
        ) {
          pending.length += length;
        } else {
          if (!readPending()) return false;
          if (piece.kind === PieceKind.Data) pending = { host: piece.host, start: done, length };
          else if (piece.kind === PieceKind.Zero) into.fill(0, done, done + length);
          else if (!this.#readBelowNow(at, into.subarray(done, done + length))) return false;
        }
        done += length;
      }
      return readPending();
    } catch {
      return false;
    }
  }

  /** What lies below this layer, read at once: zeroes, or a backing node that can. */
  #readBelowNow(offset: number, into: Uint8Array): boolean {
    const backing = this.backing;
    const available = backing ? Math.max(0, Math.min(into.length, backing.size - offset)) : 0;
    if (available && !backing!.readNow(offset, into.subarray(0, available))) return false;
    into.fill(0, available);
    return true;
  }

  /** Data when every piece is stored data (cached L2 tables) that the file knows as data. */
  protected override driverHoldsDataNow(offset: number, length: number): boolean {
    try {
      for (let done = 0; done < length;) {
        const at = offset + done;
        const step = Math.min(this.#pieceSize - (at % this.#pieceSize), length - done);
        const piece = this.#pieceNow(at);
        if (piece?.kind !== PieceKind.Data || !this.#file.holdsDataNow(piece.host, step)) {
          return false;
        }
        done += step;
      }
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Write at once over data this image alone references (cached L2 tables,
   * contiguous in the file) where the file can write at once; never with FUA
   * (a flush writes metadata back) nor on a broken image.
   */
  protected override driverWriteNow(
    offset: number,
    data: Uint8Array,
    options: WriteOptions,
  ): boolean {
    if (options.fua || !this.#refcounts || this.#broken || data.length === 0) return false;
    try {
      const host = this.#ownDataAt(offset, data.length);
      return host !== undefined && this.#file.writeNow(host, data);
    } catch {
      return false;
    }
  }

  /** Fill `into` from the image (backing file or zeroes where nothing is stored). */
  protected driverRead(offset: number, into: Uint8Array): Promise<void> {
    const reading = this.#read(offset, into);
    this.#reads.add(reading);
    const done = () => this.#reads.delete(reading);
    reading.then(done, done);
    return reading;
  }

  async #read(offset: number, into: Uint8Array): Promise<void> {
    const runs: Promise<void>[] = [];
    let run: Run | undefined;
    for (let done = 0; done < into.length;) {
      const at = offset + done;
      const length = Math.min(this.#pieceSize - (at % this.#pieceSize), into.length - done);
      const piece = await this.#piece(at);
      if (
        run && run.kind === piece.kind && piece.kind !== PieceKind.Compressed &&
        (piece.kind !== PieceKind.Data || run.host + run.length === piece.host)
      ) {
        run.length += length;
      } else {
        if (run) runs.push(this.#readRun(run, into.subarray(run.offset - offset)));
        run = { ...piece, offset: at, length };
      }
      done += length;
    }
    if (run) runs.push(this.#readRun(run, into.subarray(run.offset - offset)));
    await Promise.all(runs);
  }

  async #readRun(run: Run, into: Uint8Array): Promise<void> {
    const target = into.subarray(0, run.length);
    switch (run.kind) {
      case PieceKind.Zero:
        target.fill(0);
        return;
      case PieceKind.Unallocated:
        return await this.#readBelow(run.offset, target);
      case PieceKind.Data:
        this.#checkHostRange(run.host, run.length);
        return await this.#file.read(run.host, target);
      default: {
        const cluster = await this.#decompressed(run.host, run.high, run.low);
        const within = run.offset % this.#clusterSize;
        target.set(cluster.subarray(within, within + run.length));
      }
    }
  }

  /** Read what lies under this layer: the backing node (zeroes past its end) or zeroes. */
  async #readBelow(offset: number, into: Uint8Array): Promise<void> {
    const backing = this.backing;
    const available = backing ? Math.max(0, Math.min(into.length, backing.size - offset)) : 0;
    if (available) await backing!.read(offset, into.subarray(0, available));
    into.subarray(available).fill(0);
  }

  /** Fail unless host range [host, host+length) is past cluster 0 and inside the file. */
  #checkHostRange(host: number, length: number): void {
    if (host < this.#clusterSize || host + length > this.#file.size) {
      throw corruptImage(`data cluster at 0x${host.toString(16)} lies outside the image file`);
    }
  }

  /** The decompressed contents of the compressed cluster whose entry is (high, low) at `key`. */
  async #decompressed(key: number, high: number, low: number): Promise<Uint8Array> {
    if (this.#lastCompressed?.host === key) return this.#lastCompressed.data;
    const place = compressedPlace(high, low, this.#clusterBits);
    if (place.offset < this.#clusterSize || place.offset >= this.#file.size) {
      throw corruptImage(
        `compressed cluster at 0x${place.offset.toString(16)} lies outside the image file`,
      );
    }
    const input = new Uint8Array(Math.min(place.length, this.#file.size - place.offset));
    await this.#file.read(place.offset, input);
    const data = new Uint8Array(this.#clusterSize);
    decompressCluster(this.#compression, input, data);
    this.#lastCompressed = { host: key, data };
    return data;
  }

  /**
   * The piece holding virtual offset `at`: its kind, and for Data the host
   * offset of `at` itself; for Compressed the entry's halves and a key.
   */
  async #piece(at: number): Promise<Piece> {
    const cluster = Math.floor(at / this.#clusterSize);
    const slot = this.#slot(cluster);
    const table = slot.l2 === 0 ? undefined : await this.#l2Cache.get(slot.l2);
    return this.#pieceIn(table, slot, at, cluster);
  }

  /**
   * The piece holding `at` when its L2 table is cached (or it has none);
   * undefined when the table must be read first. Throws on corruption.
   */
  #pieceNow(at: number): Piece | undefined {
    const cluster = Math.floor(at / this.#clusterSize);
    const slot = this.#slot(cluster);
    const table = slot.l2 === 0 ? undefined : this.#l2Cache.peek(slot.l2);
    if (slot.l2 !== 0 && !table) return undefined;
    return this.#pieceIn(table, slot, at, cluster);
  }

  /** The piece holding `at` (in `cluster`), at `slot` of L2 `table` (none: unallocated). */
  #pieceIn(
    table: Uint8Array | undefined,
    slot: { l2: number; index: number },
    at: number,
    cluster: number,
  ): Piece {
    if (!table) return { kind: PieceKind.Unallocated, host: 0, high: 0, low: 0 };
    const view = new DataView(table.buffer, table.byteOffset, table.byteLength);
    const entryAt = slot.index * this.#entryBytes;
    const high = view.getUint32(entryAt);
    const low = view.getUint32(entryAt + 4);
    const within = at - cluster * this.#clusterSize;
    const sub = this.#extended ? Math.floor(within / this.#pieceSize) : 0;
    const kind = pieceKind(
      high,
      low,
      this.#extended,
      this.#extended ? view.getUint32(entryAt + 8) : 0,
      this.#extended ? view.getUint32(entryAt + 12) : 0,
      sub,
    );
    if (kind === PieceKind.Compressed) {
      return { kind, host: slot.l2 + entryAt, high, low };
    }
    if (kind !== PieceKind.Data) return { kind, host: 0, high, low };
    const host = hostOffsetOf(high, low);
    if (host === 0 || host % this.#clusterSize !== 0) {
      throw corruptImage(
        `cluster allocation offset 0x${host.toString(16)} invalid (L2 entry of cluster ${cluster})`,
      );
    }
    return { kind, host: host + within, high, low };
  }

  /** The L2 table offset (0: none) and the entry index of `cluster`, validated. */
  #slot(cluster: number): { l2: number; index: number } {
    const l1Index = Math.floor(cluster / this.#l2Entries);
    const index = cluster - l1Index * this.#l2Entries;
    if (l1Index * 8 >= this.#l1.byteLength) return { l2: 0, index };
    const l2 = offsetField(this.#l1, l1Index * 8);
    if (
      l2 !== 0 &&
      (l2 % this.#clusterSize !== 0 || l2 < this.#clusterSize ||
        l2 + this.#clusterSize > this.#file.size)
    ) {
      throw corruptImage(
        `L2 table offset 0x${l2.toString(16)} invalid (L1 index 0x${l1Index.toString(16)})`,
      );
    }
    return { l2, index };
  }

  /**
   * This layer's allocation from `offset`: stored data, zero clusters, and
   * unallocated stretches (allocated=false; zero when nothing is below).
   */
  protected async driverBlockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    const extents: BlockExtent[] = [];
    let last: { data: boolean; zero: boolean; allocated: boolean; length: number } | undefined;
    let fileRun: { start: number; end: number; zero: boolean } | undefined;
    let done = 0;
    for (let pieces = 0; done < length && pieces < MAX_STATUS_PIECES; pieces++) {
      const at = offset + done;
      const cluster = Math.floor(at / this.#clusterSize);
      // Without an L2 table, everything up to the next L1 entry is unallocated.
      const span = this.#slot(cluster).l2 === 0
        ? (Math.floor(cluster / this.#l2Entries) + 1) * this.#l2Entries * this.#clusterSize - at
        : this.#pieceSize - (at % this.#pieceSize);
      let step = Math.min(span, length - done);
      const piece = await this.#piece(at);
      let status: { data: boolean; zero: boolean; allocated: boolean };
      if (piece.kind === PieceKind.Unallocated) {
        const backingSize = this.backing?.size ?? 0;
        if (at < backingSize) step = Math.min(step, backingSize - at);
        status = { data: false, zero: at >= backingSize, allocated: false };
      } else if (piece.kind === PieceKind.Data && this.#file.capabilities.blockStatus) {
        // As QEMU: stored data over a hole of the file reads as zeroes.
        if (!fileRun || piece.host < fileRun.start || piece.host >= fileRun.end) {
          const [extent] = await this.#file.blockStatus(
            piece.host,
            Math.max(1, Math.min(length - done, this.#file.size - piece.host)),
          );
          fileRun = { start: piece.host, end: piece.host + extent.length, zero: extent.zero };
        }
        step = Math.min(step, fileRun.end - piece.host);
        status = { data: true, zero: fileRun.zero, allocated: true };
      } else {
        const zero = piece.kind === PieceKind.Zero;
        status = { data: !zero, zero, allocated: true };
      }
      if (
        last && last.data === status.data && last.zero === status.zero &&
        last.allocated === status.allocated
      ) {
        last.length += step;
      } else {
        if (extents.length === MAX_EXTENTS) break;
        last = { ...status, length: step };
        extents.push(last);
      }
      done += step;
    }
    return extents;
  }

  /**
   * Prefetch the range: the host bytes of stored clusters from the image
   * file, unallocated ones from the backing node (zero and compressed
   * clusters have nothing worth prefetching).
   */
  protected async driverCache(offset: number, length: number): Promise<void> {
    for (let done = 0; done < length;) {
      const at = offset + done;
      const step = Math.min(this.#pieceSize - (at % this.#pieceSize), length - done);
      const piece = await this.#piece(at);
      if (piece.kind === PieceKind.Data) {
        await this.#file.cache(piece.host, Math.min(step, this.#file.size - piece.host));
      } else if (piece.kind === PieceKind.Unallocated && this.backing && at < this.backing.size) {
        await this.backing.cache(at, Math.min(step, this.backing.size - at));
      }
      done += step;
    }
  }

  /** Store `data` at `offset`, allocating clusters (copy-on-write) where needed. */
  protected async driverWrite(
    offset: number,
    data: Uint8Array,
    options: WriteOptions,
  ): Promise<void> {
    this.#checkWritable();
    if (!(await this.#writeInPlace(offset, data))) {
      for (let done = 0; done < data.length;) {
        const at = offset + done;
        const length = Math.min(this.#clusterSize - (at % this.#clusterSize), data.length - done);
        const bytes = data.subarray(done, done + length);
        await this.#locked(() => this.#writeCluster(at, length, bytes));
        done += length;
      }
    }
    if (options.fua) await this.flush();
  }

  /**
   * Make `length` bytes at `offset` read as zeroes: zero clusters (and
   * subclusters) in version 3, unmapped with `mayTrim`; in version 2 without
   * a backing file, discarded clusters; explicit zeroes for the unaligned
   * ends and in version 2 with a backing file (as QEMU does).
   */
  protected async driverWriteZeroes(
    offset: number,
    length: number,
    options: ZeroOptions,
  ): Promise<void> {
    this.#checkWritable();
    const piece = this.#pieceSize;
    const end = offset + length;
    const version2 = this.#header.version === 2;
    const mayTrim = Boolean(options.mayTrim);
    let first = Math.ceil(offset / piece) * piece;
    let last = end === this.#size
      ? Math.ceil(end / piece) * piece
      : Math.floor(end / piece) * piece;
    if (version2 && this.backing) first = last = end;
    if (first >= last) first = last = Math.min(Math.floor(offset / piece) * piece + piece, end);
    if (options.fast && (first !== offset || Math.min(last, end) !== end)) {
      throw new DenbdError("not-supported", "qcow2: zeroing this range is not fast");
    }
    if (offset < first) await this.#zeroPartialPiece(offset, first - offset, mayTrim);
    for (let at = first; at < last;) {
      const cluster = Math.floor(at / this.#clusterSize);
      const until = Math.min(last, (cluster + 1) * this.#clusterSize);
      const from = at;
      await this.#locked(() =>
        version2 ? this.#discardCluster(cluster) : this.#zeroPieces(cluster, from, until, mayTrim)
      );
      at = until;
    }
    if (Math.max(last, first) < end) {
      const from = Math.max(last, first);
      await this.#zeroPartialPiece(from, end - from, mayTrim);
    }
    if (options.fua) await this.flush();
  }

  /**
   * Zero part of one piece as QEMU does: when the piece is unallocated or
   * zero and the rest of it reads as zeroes already, the whole piece
   * becomes zero; otherwise zeroes are written.
   */
  async #zeroPartialPiece(at: number, length: number, mayTrim: boolean): Promise<void> {
    const piece = this.#pieceSize;
    const start = Math.floor(at / piece) * piece;
    const end = Math.min(start + piece, this.#size);
    const canZero = !(this.#header.version === 2 && this.backing) &&
      await this.#locked(async () => {
        const kind = (await this.#piece(start)).kind;
        if (kind !== PieceKind.Unallocated && kind !== PieceKind.Zero) return false;
        if (!(await this.#readsAsZero(start, at - start))) return false;
        if (!(await this.#readsAsZero(at + length, end - at - length))) return false;
        const cluster = Math.floor(start / this.#clusterSize);
        if (this.#header.version === 2) await this.#discardCluster(cluster);
        else await this.#zeroPieces(cluster, start, start + piece, mayTrim);
        return true;
      });
    if (!canZero) await this.#writeZeroBytes(at, length);
  }

  /** Whether `length` bytes at `offset` read as zeroes (through the backing chain). */
  async #readsAsZero(offset: number, length: number): Promise<boolean> {
    for (let done = 0; done < length;) {
      for (const extent of await this.blockStatus(offset + done, length - done)) {
        if (!extent.allocated && this.backing && !extent.zero) {
          if (!(await readsAsZeroIn(this.backing, offset + done, extent.length))) return false;
        } else if (!extent.zero) {
          return false;
        }
        done += extent.length;
      }
    }
    return true;
  }

  /** Write explicit zeroes (bounded buffers) through the write path. */
  async #writeZeroBytes(offset: number, length: number): Promise<void> {
    for (let done = 0; done < length;) {
      const chunk = Math.min(length - done, 1 << 20);
      await this.write(offset + done, new Uint8Array(chunk));
      done += chunk;
    }
  }

  /**
   * With discard=unmap, free whole clusters in the range as QEMU does: they
   * become zero clusters in version 3 and unallocated in version 2 (where
   * an image with a backing file keeps them); otherwise nothing happens.
   */
  protected async driverTrim(offset: number, length: number, options: WriteOptions): Promise<void> {
    this.#checkWritable();
    if (this.#discard !== "unmap") return;
    if (this.#header.version === 2 && this.backing) return;
    const cs = this.#clusterSize;
    const end = offset + length;
    const first = Math.ceil(offset / cs);
    const last = end === this.#size ? Math.ceil(end / cs) : Math.floor(end / cs);
    for (let cluster = first; cluster < last; cluster++) {
      await this.#locked(() => this.#discardCluster(cluster));
    }
    if (options.fua) await this.flush();
  }

  #checkWritable(): void {
    if (!this.#refcounts) throw new DenbdError("read-only", "qcow2: image opened read-only");
    if (this.#broken) {
      throw new DenbdError(
        "io",
        `qcow2: refusing to write a corrupt image: ${this.#broken.message}`,
      );
    }
  }

  /** Run `body` holding the metadata lock; corruption found on the way stops all changes. */
  async #locked<T>(body: () => Promise<T>): Promise<T> {
    const release = await this.#metadataLock.acquire(0, 1);
    try {
      this.#checkWritable();
      return await body();
    } catch (error) {
      if (error instanceof CorruptImageError) this.#broken = error;
      throw error;
    } finally {
      release();
    }
  }

  /**
   * The hot path: when every piece of the request is stored data that this
   * image alone references, contiguously, one file write; false otherwise.
   */
  async #writeInPlace(offset: number, data: Uint8Array): Promise<boolean> {
    if (data.length === 0) return true;
    await this.#cacheTables(offset, data.length);
    const host = this.#ownDataAt(offset, data.length);
    if (host === undefined) return false;
    await this.#file.write(host, data);
    return true;
  }

  /** Read into the cache the L2 tables covering `length` (> 0) bytes from `offset`. */
  async #cacheTables(offset: number, length: number): Promise<void> {
    const last = Math.floor((offset + length - 1) / this.#clusterSize);
    for (let cluster = Math.floor(offset / this.#clusterSize); cluster <= last;) {
      const { l2 } = this.#slot(cluster);
      if (l2 !== 0 && !this.#l2Cache.peek(l2)) await this.#l2Cache.get(l2);
      cluster = (Math.floor(cluster / this.#l2Entries) + 1) * this.#l2Entries;
    }
  }

  /**
   * Where `length` (> 0) bytes from `offset` are stored contiguously as data
   * this image alone references (COPIED), as far as the cached L2 tables
   * tell: the host offset, or undefined (not so, or a table is not cached).
   */
  #ownDataAt(offset: number, length: number): number | undefined {
    let host = 0;
    for (let done = 0; done < length;) {
      const at = offset + done;
      const piece = this.#pieceNow(at);
      if (piece?.kind !== PieceKind.Data || !(piece.high & COPIED_FLAG)) return undefined;
      if (done === 0) host = piece.host;
      else if (piece.host !== host + done) return undefined;
      done += Math.min(this.#pieceSize - (at % this.#pieceSize), length - done);
    }
    this.#checkHostRange(host, length);
    return host;
  }

  /**
   * Write `length` bytes at `at` (within one cluster; zeroes when `bytes` is
   * undefined): in place where the cluster is this image's own, else into a
   * new cluster with the rest of the touched (sub)clusters copied from what
   * reads there now. Holds the metadata lock.
   */
  async #writeCluster(at: number, length: number, bytes: Uint8Array | undefined): Promise<void> {
    const cs = this.#clusterSize;
    const cluster = Math.floor(at / cs);
    const clusterStart = cluster * cs;
    const within = at - clusterStart;
    const { table, l2, entryAt } = await this.#writableSlot(cluster);
    const view = new DataView(table.buffer, table.byteOffset, table.byteLength);
    const high = view.getUint32(entryAt);
    const low = view.getUint32(entryAt + 4);
    const zeroBits = this.#extended ? view.getUint32(entryAt + 8) : 0;
    const allocBits = this.#extended ? view.getUint32(entryAt + 12) : 0;
    const compressed = (high & COMPRESSED_FLAG) !== 0;
    const host = compressed ? 0 : this.#checkedHost(high, low, cluster);
    const inPlace = host !== 0 && (high & COPIED_FLAG) !== 0;
    const shared = compressed || (host !== 0 && !inPlace);
    if (this.#extended && host === 0 && !compressed && allocBits !== 0) {
      throw corruptImage(`subclusters of unallocated cluster ${cluster} marked allocated`);
    }
    const piece = this.#pieceSize;
    const touched = subclusterMask(
      Math.floor(within / piece),
      Math.ceil((within + length) / piece),
    );
    let regionStart = within, regionEnd = within + length;
    if (shared || (!this.#extended && (!inPlace || (low & ZERO_FLAG)))) {
      regionStart = 0;
      regionEnd = cs;
    } else if (this.#extended && (!inPlace || (allocBits & touched) >>> 0 !== touched)) {
      regionStart = Math.floor(within / piece) * piece;
      regionEnd = Math.ceil((within + length) / piece) * piece;
    }
    let buffer: Uint8Array;
    if (regionStart === within && regionEnd === within + length) {
      buffer = bytes ?? new Uint8Array(length);
    } else {
      buffer = new Uint8Array(regionEnd - regionStart);
      await this.read(clusterStart + regionStart, buffer);
      if (bytes) buffer.set(bytes, within - regionStart);
      else buffer.fill(0, within - regionStart, within - regionStart + length);
    }
    const target = inPlace ? host : await this.#allocate(1);
    await this.#file.write(target + regionStart, buffer);
    this.#setEntry(view, entryAt, target, true);
    if (this.#extended) {
      const alloc = compressed ? ALL_SUBCLUSTERS : ((host !== 0 ? allocBits : 0) | touched) >>> 0;
      view.setUint32(entryAt + 8, (zeroBits & ~alloc) >>> 0);
      view.setUint32(entryAt + 12, alloc);
    }
    this.#l2Cache.markDirty(l2);
    if (shared) await this.#release(high, low, false);
    await this.#boundDirtyMetadata();
  }

  /** Make pieces [from, until) of `cluster` (virtual offsets, piece aligned) zero. */
  async #zeroPieces(cluster: number, from: number, until: number, mayTrim: boolean) {
    const cs = this.#clusterSize;
    const whole = until - from === cs;
    const { table, l2, entryAt } = await this.#writableSlot(cluster);
    const view = new DataView(table.buffer, table.byteOffset, table.byteLength);
    const high = view.getUint32(entryAt);
    const low = view.getUint32(entryAt + 4);
    const compressed = (high & COMPRESSED_FLAG) !== 0;
    if (!whole) {
      if (compressed) return await this.#writeCluster(from, until - from, undefined);
      const base = cluster * cs;
      const mask = subclusterMask(
        (from - base) / this.#pieceSize,
        (until - base) / this.#pieceSize,
      );
      view.setUint32(entryAt + 8, (view.getUint32(entryAt + 8) | mask) >>> 0);
      view.setUint32(entryAt + 12, (view.getUint32(entryAt + 12) & ~mask) >>> 0);
      this.#l2Cache.markDirty(l2);
      return await this.#boundDirtyMetadata();
    }
    const host = compressed ? 0 : this.#checkedHost(high, low, cluster);
    const unmap = compressed || (mayTrim && host !== 0);
    if (unmap) view.setBigUint64(entryAt, 0n);
    else this.#setEntry(view, entryAt, host, (high & COPIED_FLAG) !== 0);
    if (this.#extended) {
      view.setUint32(entryAt + 8, ALL_SUBCLUSTERS);
      view.setUint32(entryAt + 12, 0);
    } else {
      view.setUint32(entryAt + 4, (view.getUint32(entryAt + 4) | ZERO_FLAG) >>> 0);
    }
    this.#l2Cache.markDirty(l2);
    if (unmap) await this.#release(high, low, true);
    await this.#boundDirtyMetadata();
  }

  /**
   * Discard `cluster` as QEMU does: free its storage; it then reads as
   * zeroes (version 3) or is unallocated (version 2). An unallocated cluster
   * without a backing file already reads as zeroes and is left alone.
   */
  async #discardCluster(cluster: number): Promise<void> {
    if (this.#slot(cluster).l2 === 0 && !this.backing) return;
    const { table, l2, entryAt } = await this.#writableSlot(cluster);
    const view = new DataView(table.buffer, table.byteOffset, table.byteLength);
    const high = view.getUint32(entryAt);
    const low = view.getUint32(entryAt + 4);
    const compressed = (high & COMPRESSED_FLAG) !== 0;
    const host = compressed ? 0 : this.#checkedHost(high, low, cluster);
    if (!compressed && host === 0 && !this.backing) return;
    view.setBigUint64(entryAt, 0n);
    if (this.#extended) {
      view.setUint32(entryAt + 8, ALL_SUBCLUSTERS);
      view.setUint32(entryAt + 12, 0);
    } else if (this.#header.version === 3) {
      view.setUint32(entryAt + 4, ZERO_FLAG);
    }
    this.#l2Cache.markDirty(l2);
    if (compressed || host !== 0) await this.#release(high, low, true);
    await this.#boundDirtyMetadata();
  }

  /** The host offset of a standard entry, checked to be aligned and past cluster 0. */
  #checkedHost(high: number, low: number, cluster: number): number {
    const host = hostOffsetOf(high, low);
    if (host !== 0 && (host % this.#clusterSize !== 0 || host < this.#clusterSize)) {
      throw corruptImage(
        `cluster allocation offset 0x${host.toString(16)} invalid (L2 entry of cluster ${cluster})`,
      );
    }
    return host;
  }

  /** Store a standard entry: `host` with the COPIED flag when `copied`. */
  #setEntry(view: DataView, entryAt: number, host: number, copied: boolean): void {
    setU64(view, entryAt, host);
    if (copied) view.setUint32(entryAt, (view.getUint32(entryAt) | COPIED_FLAG) >>> 0);
  }

  /**
   * Drop the reference an old entry (high, low) held, after the L2 tables
   * that no longer point to it were written; freed clusters are punched in
   * the file when `punch` (a discard request, as QEMU's pass-discard-request).
   */
  async #release(high: number, low: number, punch: boolean): Promise<void> {
    const cs = this.#clusterSize;
    let first: number, count: number;
    if (high & COMPRESSED_FLAG) {
      const place = compressedPlace(high, low, this.#clusterBits);
      first = Math.floor(place.offset / cs);
      count = Math.floor((place.offset + place.length - 1) / cs) - first + 1;
      this.#lastCompressed = undefined;
    } else {
      first = hostOffsetOf(high, low) / cs;
      count = 1;
    }
    await this.#writeBackMetadata();
    // A read that found the old entry may still be reading these clusters:
    // they are not reused (nor punched) before it is done.
    await Promise.allSettled([...this.#reads]);
    for (let index = first; index < first + count; index++) {
      const left = await this.#refcounts!.update(index, -1);
      if (left === 0 && punch) await this.#file.trim(index * cs, cs);
    }
  }

  /**
   * The L2 table of `cluster`, ready to change: allocated when missing, or
   * copied when shared with a snapshot (L1 entry without COPIED); the L1
   * entry is rewritten after the new table is on disk.
   */
  async #writableSlot(
    cluster: number,
  ): Promise<{ table: Uint8Array; l2: number; entryAt: number }> {
    const slot = this.#slot(cluster);
    const l1Index = Math.floor(cluster / this.#l2Entries);
    const entryAt = slot.index * this.#entryBytes;
    if (l1Index * 8 >= this.#l1.byteLength) {
      throw corruptImage(`cluster ${cluster} lies beyond the L1 table`);
    }
    if (slot.l2 !== 0 && (this.#l1.getUint32(l1Index * 8) & COPIED_FLAG)) {
      return { table: await this.#l2Cache.get(slot.l2), l2: slot.l2, entryAt };
    }
    const old = slot.l2 === 0 ? undefined : await this.#l2Cache.get(slot.l2);
    const l2 = await this.#allocate(1);
    const table = this.#l2Cache.create(l2);
    if (old) table.set(old);
    await this.#writeBackMetadata();
    this.#setEntry(this.#l1, l1Index * 8, l2, true);
    await this.#file.write(
      this.#l1Offset + l1Index * 8,
      new Uint8Array(this.#l1.buffer, this.#l1.byteOffset + l1Index * 8, 8),
    );
    if (slot.l2 !== 0) {
      await this.#file.flush();
      this.#l2Cache.drop(slot.l2);
      this.#lastCompressed = undefined;
      await Promise.allSettled([...this.#reads]);
      await this.#refcounts!.update(slot.l2 / this.#clusterSize, -1);
    }
    return { table, l2, entryAt };
  }

  /**
   * Allocate `count` clusters; a free cluster inside the file that holds
   * metadata (refcounts that lie) is corruption, found before anything is
   * written there.
   */
  async #allocate(count: number): Promise<number> {
    const offset = await this.#refcounts!.allocate(count);
    const cs = this.#clusterSize;
    for (let at = offset; at < offset + count * cs && at < this.#file.size; at += cs) {
      if (this.#holdsMetadata(at)) {
        throw corruptImage(`free cluster 0x${at.toString(16)} holds metadata`);
      }
    }
    return offset;
  }

  /** Whether the cluster at host `offset` holds the header, the L1 table, an L2 table or refcounts. */
  #holdsMetadata(offset: number): boolean {
    const cs = this.#clusterSize;
    if (offset < cs) return true;
    if (offset + cs > this.#l1Offset && offset < this.#l1Offset + this.#l1.byteLength) return true;
    for (let at = 0; at < this.#l1.byteLength; at += 8) {
      if (offsetField(this.#l1, at) === offset) return true;
    }
    return this.#refcounts!.holdsRefcounts(offset);
  }

  /** Write metadata back once enough of it changed, so the caches stay bounded. */
  async #boundDirtyMetadata(): Promise<void> {
    if (this.#l2Cache.dirtyCount + this.#refcounts!.dirtyCount >= MAX_DIRTY_TABLES) {
      await this.#writeBackMetadata();
    }
  }

  /** Write back changed metadata (refcounts first) and flush the file. */
  async flush(): Promise<void> {
    if (!this.#refcounts) return;
    const release = await this.#metadataLock.acquire(0, 1);
    try {
      if (!this.#broken) await this.#writeBackMetadata();
      await this.#file.flush();
    } finally {
      release();
    }
  }

  /** Write changed refcount blocks (flushed) and then changed L2 tables (not flushed). */
  async #writeBackMetadata(): Promise<void> {
    if (this.#refcounts?.dirty) {
      await this.#refcounts.writeBack();
      await this.#file.flush();
    }
    await this.#l2Cache.writeBack();
  }

  /** Write back metadata; the file and backing nodes belong to the caller. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#refcounts && !this.#broken) await this.flush();
  }

  /** Rewrite the header (with its extensions and backing name) and flush. */
  async #rewriteHeader(header: Qcow2Header): Promise<void> {
    const bytes = encodeHeader(header);
    await this.#file.write(0, bytes);
    await this.#file.flush();
    this.#header = header;
  }

  /** Record the refcount table's new place in the header. */
  async #moveRefcountTable(tableOffset: number, tableClusters: number): Promise<void> {
    const fields = new Uint8Array(12);
    const view = new DataView(fields.buffer);
    setU64(view, 0, tableOffset);
    view.setUint32(8, tableClusters);
    await this.#file.write(48, fields);
    await this.#file.flush();
    this.#header = {
      ...this.#header,
      refcountTableOffset: tableOffset,
      refcountTableClusters: tableClusters,
    };
  }

  /** The {@linkcode Qcow2Metadata} view of this image. */
  #metadataView(): Qcow2Metadata {
    const header = () => this.#header;
    const refcounts = () => {
      if (!this.#refcounts) throw new DenbdError("read-only", "qcow2: image opened read-only");
      return this.#refcounts;
    };
    const locked = async <T>(body: () => Promise<T>): Promise<T> => {
      const release = await this.#metadataLock.acquire(0, 1);
      try {
        return await body();
      } finally {
        release();
      }
    };
    return {
      file: this.#file,
      clusterSize: this.#clusterSize,
      virtualSize: this.#size,
      writable: this.#refcounts !== undefined,
      allocateClusters: (count) =>
        locked(() => {
          refcounts();
          return this.#allocate(count);
        }),
      freeClusters: (offset, count) =>
        locked(async () => {
          await this.#writeBackMetadata();
          await refcounts().free(offset, count);
        }),
      isValidMetadataRange: (offset, length) =>
        offset >= this.#clusterSize && length >= 0 && offset + length <= this.#file.size,
      get bitmapsExtension() {
        return extensionData(header(), EXT_BITMAPS);
      },
      bitmapsConsistent: this.#bitmapsConsistentAtOpen,
      writeBitmapsExtension: (data, consistent) =>
        locked(async () => {
          refcounts();
          await this.#writeBackMetadata();
          await this.#file.flush();
          const extensions = this.#header.extensions.filter((e) => e.type !== EXT_BITMAPS);
          if (data) extensions.push({ type: EXT_BITMAPS, data });
          const autoclear = consistent
            ? this.#header.autoclearFeatures | AUTOCLEAR_BITMAPS
            : this.#header.autoclearFeatures & ~AUTOCLEAR_BITMAPS;
          await this.#rewriteHeader({
            ...this.#header,
            extensions,
            autoclearFeatures: autoclear,
          });
        }),
    };
  }
}

/** Whether `length` bytes at `offset` of `node` read as zeroes, by its block status. */
async function readsAsZeroIn(node: BlockNode, offset: number, length: number): Promise<boolean> {
  for (let done = 0; done < length;) {
    for (const extent of await node.blockStatus(offset + done, length - done)) {
      if (!extent.zero) return false;
      done += extent.length;
    }
  }
  return true;
}

/**
 * How deep in a backing chain the current open is: an open called from an
 * `openBacking` callback runs one level below the image that called it.
 */
const openingDepth = new AsyncLocalStorage<number>();
/** Longest backing chain opened; deeper means a loop (or an absurd chain). */
const MAX_BACKING_DEPTH = 256;

/** The backing node for `header` as the options ask (a chain that loops is refused). */
async function openBackingOf(
  header: Qcow2Header,
  options: Qcow2OpenOptions,
): Promise<BlockNode | null> {
  if (options.backing !== undefined) return options.backing;
  if (header.backingFile === undefined) return null;
  if (!options.openBacking) {
    throw new DenbdError(
      "invalid",
      `qcow2: the image has a backing file (${header.backingFile}) and no way to open it`,
    );
  }
  const depth = (openingDepth.getStore() ?? 0) + 1;
  if (depth > MAX_BACKING_DEPTH) {
    throw new DenbdError(
      "invalid",
      `Backing file '${header.backingFile}' creates an infinite loop ` +
        `(more than ${MAX_BACKING_DEPTH} images in the chain)`,
    );
  }
  const format = extensionData(header, EXT_BACKING_FORMAT);
  return await openingDepth.run(depth, () =>
    options.openBacking!({
      filename: header.backingFile!,
      format: format ? new TextDecoder().decode(format) : undefined,
    }));
}
