/**
 * QEMU's `raw` format driver: a node that passes every request through to
 * its `file` child, optionally limited to a window of it (`offset`, `size`).
 * Like QEMU it has a discard mode of its own: with "ignore" (the default of
 * blockdev-add) discards stop here. Write-zeroes may unmap in the child only
 * when the child itself discards (QEMU strips BDRV_REQ_MAY_UNMAP on the way
 * to a child opened without discard=unmap, whatever the parent's mode).
 *
 * A node opened `probed` (its format was guessed, not named) keeps the image
 * raw, as QEMU's probed-raw protection does: a change to block 0 whose
 * result would probe as another format (a qcow2 header pointing at a backing
 * file, say) fails with kind "read-only" (EPERM over NBD). The new content of
 * block 0 is checked with what is already there around the request; changes
 * to block 0 run one at a time so that none is checked against stale bytes.
 * QEMU checks writes only; here write-zeroes and passed-down discards (which
 * may leave zeroes) are checked the same way.
 *
 * @example
 * ```ts
 * import { RawNode } from "./raw.ts";
 * import { MemoryNode } from "./memory.ts";
 * const file = new MemoryNode(4 << 20);
 * const raw = RawNode.open(file, { offset: 1 << 20, size: 2 << 20 });
 * await raw.write(0, new Uint8Array([1])); // lands at 1 MiB in `file`
 * ```
 * @module
 */

import { DenbdError } from "../errors.ts";
import { formatOfFirstBlock, PROBE_BYTES } from "./probe.ts";
import { RangeLock } from "./range-lock.ts";
import { FilterNode } from "./filter.ts";
import type { BlockNode, NodeCapabilities, WriteOptions, ZeroOptions } from "./node.ts";

/** Options of `driver=raw` (QEMU's BlockdevOptionsRaw, plus the generic ones that matter). */
export interface RawNodeOptions {
  /** Where the window starts in the child (any byte offset up to the child's size). */
  readonly offset?: number;
  /** Bytes in the window: a multiple of 512 within the child (default: the rest of it). */
  readonly size?: number;
  /** Refuse changes even when the child accepts them. */
  readonly readOnly?: boolean;
  /** "unmap" passes discards down; "ignore" (default) accepts and drops them. */
  readonly discard?: "ignore" | "unmap";
  /** Close the child when this node is closed (it has no name of its own). */
  readonly ownsChild?: boolean;
  /** The format was probed, not named: refuse changes that make block 0 another format. */
  readonly probed?: boolean;
}

/** A raw format node over a child node: a filter that may window and refuse. */
export class RawNode extends FilterNode {
  /** Where this node's byte 0 lies in the child. */
  readonly offset: number;
  readonly #size: number;
  readonly #capabilities: NodeCapabilities;
  readonly #unmap: boolean;
  /** Serialises changes to block 0 of a probed image; null when not probed. */
  readonly #firstBlock: RangeLock | null;

  private constructor(child: BlockNode, offset: number, size: number, options: RawNodeOptions) {
    super(child, { ownsFile: options.ownsChild });
    this.offset = offset;
    this.#size = size;
    this.#unmap = options.discard === "unmap";
    this.#firstBlock = options.probed ? new RangeLock() : null;
    const can = child.capabilities;
    this.#capabilities = {
      ...can,
      writable: can.writable && !options.readOnly,
      trim: can.trim && this.#unmap,
    };
  }

  /** A format node with a fixed window: it never grows, whatever its child does. */
  override get growable(): boolean {
    return false;
  }

  /**
   * A raw node over `child`. Throws kind "invalid" with QEMU's message when
   * the window does not fit the child or `size` is not a multiple of 512.
   */
  static open(child: BlockNode, options: RawNodeOptions = {}): RawNode {
    const offset = options.offset ?? 0;
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw new DenbdError("invalid", `invalid offset ${offset}`);
    }
    if (options.discard !== undefined && !["ignore", "unmap"].includes(options.discard)) {
      throw new DenbdError("invalid", `invalid discard mode '${options.discard}'`);
    }
    const childSize = child.size;
    if (offset > childSize) {
      throw new DenbdError(
        "invalid",
        `Offset (${offset}) cannot be greater than size of the containing file (${childSize})`,
      );
    }
    const size = options.size ?? childSize - offset;
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new DenbdError("invalid", `invalid size ${size}`);
    }
    if (options.size !== undefined) {
      if (offset + size > childSize) {
        throw new DenbdError(
          "invalid",
          `The sum of offset (${offset}) and size (${size}) has to be smaller or equal to the ` +
            ` actual size of the containing file (${childSize})`,
        );
      }
      if (size % 512 !== 0) {
        throw new DenbdError("invalid", "Specified size is not multiple of 512");
      }
    }
    return new RawNode(child, offset, size, options);
  }

  /** Size of the window. */
  override get size(): number {
    return this.#size;
  }

  /** The child's, less what read-only or discard=ignore take away. */
  override get capabilities(): NodeCapabilities {
    return this.#capabilities;
  }

  /** Where byte `offset` of the window lies in the child. */
  override fileOffset(offset: number): number {
    return this.offset + offset;
  }

  /** Write into the window. */
  protected override driverWrite(
    offset: number,
    data: Uint8Array,
    options: WriteOptions,
  ): Promise<void> {
    return this.#guardFirstBlock(
      offset,
      data.length,
      (block) => block.set(data.subarray(0, block.length - offset), offset),
      () => super.driverWrite(offset, data, options),
    );
  }

  /** Write into the window at once where the child can, except block 0 of a probed image. */
  protected override driverWriteNow(
    offset: number,
    data: Uint8Array,
    options: WriteOptions,
  ): boolean {
    if (this.#firstBlock && offset < PROBE_BYTES) return false;
    return this.file.writeNow(this.fileOffset(offset), data, options);
  }

  /** Zero in the window; may unmap only where the child discards (its discard=unmap). */
  protected override driverWriteZeroes(
    offset: number,
    length: number,
    options: ZeroOptions,
  ): Promise<void> {
    const mayTrim = this.file.capabilities.trim ? options.mayTrim : false;
    return this.#guardFirstBlock(
      offset,
      length,
      (block) => block.fill(0, offset),
      () => super.driverWriteZeroes(offset, length, { ...options, mayTrim }),
    );
  }

  /** Pass the discard down with discard=unmap; accept and drop it otherwise. */
  protected override driverTrim(offset: number, length: number, options: WriteOptions) {
    if (!this.#unmap) return Promise.resolve();
    return this.#guardFirstBlock(
      offset,
      length,
      (block) => block.fill(0, offset),
      () => super.driverTrim(offset, length, options),
    );
  }

  /**
   * Run `change` (which covers `length` bytes from `offset`) directly, or,
   * on a probed image when it reaches block 0, only after checking that
   * block 0 as `apply` leaves it still probes as raw; fails with kind
   * "read-only" otherwise.
   */
  async #guardFirstBlock(
    offset: number,
    length: number,
    apply: (block: Uint8Array) => void,
    change: () => Promise<void>,
  ): Promise<void> {
    if (!this.#firstBlock || offset >= PROBE_BYTES || length === 0) return await change();
    const blockLength = Math.min(PROBE_BYTES, this.size);
    const release = await this.#firstBlock.acquire(0, blockLength);
    try {
      const block = new Uint8Array(blockLength);
      await this.read(0, block);
      apply(block.subarray(0, Math.min(blockLength, offset + length)));
      const format = formatOfFirstBlock(block);
      if (format !== "raw") {
        throw new DenbdError(
          "read-only",
          `write to block 0 refused: it would make the probed raw image look like ${format}`,
        );
      }
      await change();
    } finally {
      release();
    }
  }
}
