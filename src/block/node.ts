/**
 * The block layer's one interface: a node is a range of bytes that can be
 * read, written, zeroed, discarded, flushed and asked about its allocation.
 * Format nodes (qcow2, later) sit on protocol nodes (file, memory) and answer
 * the same questions, so exports never care what is underneath.
 *
 * Offsets and lengths are plain numbers: exact up to 2^53 bytes (8 PiB).
 * Requests are checked once, at the node's entry point: denbd's nodes
 * extend `CheckedNode` (checked-node.ts), whose public methods refuse
 * malformed ranges, ranges past the end (except writes to a growable node:
 * a file under a format that allocates past its end, as qcow2 does, grows
 * to cover them), changes to a read-only node and fast zeroes a node cannot
 * do, before its driver methods run. Filters extend `FilterNode`
 * (filter.ts); the walk down a backing chain is in chain.ts, permissions
 * and image locks in permissions.ts.
 *
 * @module
 */

/**
 * What a node can do. Exports derive their transmission flags from these
 * answers (src/nbd/server/export.ts), format nodes from their child's.
 * Apart from `writable`, the answers tell how well a request is served, not
 * whether it is: every node accepts every request of {@linkcode BlockNode}.
 */
export interface NodeCapabilities {
  /** Writes, zeroing and discards are accepted (otherwise they fail with kind "read-only"). */
  readonly writable: boolean;
  /** Discard may actually free space (otherwise it is accepted and ignored). */
  readonly trim: boolean;
  /**
   * Zeroing can be done without writing zeroes (a hole, fallocate), so a
   * zero request that must be fast may succeed; without it, such a request
   * always fails with kind "not-supported".
   */
  readonly fastZero: boolean;
  /** Cache (prefetch) hints have an effect (otherwise they are accepted and ignored). */
  readonly cache: boolean;
  /**
   * The node keeps no per-connection state or cache: writes made through one
   * handle are visible through every other once acknowledged, and a flush
   * through any handle covers them all.
   */
  readonly multiConn: boolean;
  /** Block status reports real holes and zeroes (not just "all data"). */
  readonly blockStatus: boolean;
}

/** Options of a write-like request. */
export interface WriteOptions {
  /** Force unit access: the data is durable when the call resolves. */
  readonly fua?: boolean;
}

/**
 * Options of a zeroing request. Every node follows the same contract: the
 * range reads back as zeroes afterwards, and it stays allocated unless
 * `mayTrim` is true (absent means false, as QEMU's BDRV_REQ_MAY_UNMAP is
 * opt-in). With `mayTrim`, a node that can deallocate does so (a node may
 * deallocate less than the whole range, e.g. only whole chunks).
 */
export interface ZeroOptions extends WriteOptions {
  /** The range may be deallocated (punched) as long as it reads back as zeroes; default false. */
  readonly mayTrim?: boolean;
  /** Fail with kind "not-supported" unless zeroing is faster than a write. */
  readonly fast?: boolean;
}

/** One run of bytes with the same allocation status. */
export interface BlockExtent {
  /** Bytes covered; always > 0. */
  readonly length: number;
  /** The bytes are stored (not a hole). */
  readonly data: boolean;
  /** The bytes are known to read as zeroes. */
  readonly zero: boolean;
  /**
   * This node answers for the bytes itself (QEMU's BDRV_BLOCK_ALLOCATED):
   * true everywhere on a node without a backing child (holes of a file
   * included); false where a layered node (qcow2) holds nothing and reads
   * fall through to its backing child (or read as zeroes without one).
   */
  readonly allocated: boolean;
}

/** The role a child plays for its parent, named as QEMU names them. */
export type ChildRole = "file" | "backing";

/** A node's child and the role it plays. */
export interface NodeChild {
  /** How the parent uses the child: its storage (`file`) or the layer below it (`backing`). */
  readonly role: ChildRole;
  /** The child node. */
  readonly node: BlockNode;
}

/** A node of the block graph. */
export interface BlockNode {
  /** Size in bytes (it changes only on a growable node that was written past its end). */
  readonly size: number;
  /**
   * Writes past the end are taken and grow the node, and reads past the end
   * give zeroes (a file under a format that allocates past its end).
   */
  readonly growable: boolean;
  /** The nodes this one is built on, by role; empty for a protocol node (file, memory). */
  readonly children: readonly NodeChild[];
  /** What this node can do. */
  readonly capabilities: NodeCapabilities;
  /**
   * The alignment (a power of two) that requests should respect for
   * efficiency; 1 when any byte range is as good as another.
   */
  readonly requestAlignment: number;
  /**
   * Fill `into` with the bytes at `offset`: every byte of it, zeroes
   * included (callers reuse buffers without clearing them).
   */
  read(offset: number, into: Uint8Array): Promise<void>;
  /**
   * Fill `into` with the bytes at `offset` without waiting, where they are at
   * hand (memory, the page cache): true when done, false when the caller
   * must use {@linkcode BlockNode.read} instead. Never throws: `read`
   * reports what went wrong.
   */
  readNow(offset: number, into: Uint8Array): boolean;
  /** Store `data` at `offset`. */
  write(offset: number, data: Uint8Array, options?: WriteOptions): Promise<void>;
  /**
   * Store `data` at `offset` without waiting, where that is cheap (a small
   * write into the page cache within the node, no FUA): true when done,
   * false when the caller must use {@linkcode BlockNode.write} instead.
   * Never throws: `write` reports what went wrong.
   */
  writeNow(offset: number, data: Uint8Array, options?: WriteOptions): boolean;
  /** Make `length` bytes at `offset` read as zeroes. */
  writeZeroes(offset: number, length: number, options?: ZeroOptions): Promise<void>;
  /** Hint that `length` bytes at `offset` are no longer needed. */
  trim(offset: number, length: number, options?: WriteOptions): Promise<void>;
  /** Make every completed write durable. */
  flush(): Promise<void>;
  /** Hint that `length` bytes at `offset` will be read soon. */
  cache(offset: number, length: number): Promise<void>;
  /**
   * The allocation status from `offset`: at least one extent, together
   * covering at least one byte and at most `length` bytes (fewer when the
   * node stops early), in order and without gaps. A node bounds the work of
   * one call by stopping early (a file node after 1024 extents), and one
   * that scans synchronously lets other work run between batches; callers
   * ask again from where the answer ended.
   */
  blockStatus(offset: number, length: number): Promise<BlockExtent[]>;
  /**
   * Whether the node is known, without waiting, to hold every byte of the
   * range itself as data (allocated, not known to read as zeroes): what a
   * structured read needs to send the range as one data chunk. False when
   * that cannot be told at once; {@linkcode BlockNode.blockStatus} then tells.
   */
  holdsDataNow(offset: number, length: number): boolean;
  /** Release every resource (file descriptors, locks). Idempotent. */
  close(): Promise<void>;
}
