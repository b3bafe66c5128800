/**
 * The one checked entry point of every block node: {@linkcode CheckedNode}
 * checks a request once (its range against the node's size, writability,
 * request flags the node cannot honour) and only then hands it to the
 * driver's protected method, as QEMU's generic block layer checks a request
 * before calling its driver. Drivers (memory, file, the filters) implement
 * the protected `driver*` methods and may assume the request is valid.
 *
 * A failed check (or a driver method that throws) gives a rejected promise,
 * never a synchronous throw. The checks, and the kind of error each failure
 * has:
 *
 * - offsets and lengths must be non-negative safe integers ("invalid");
 * - a range must lie within the node: a write or write-zeroes past the end
 *   is "no-space", any other request past the end is "invalid"; a growable
 *   node (a file under a format that allocates past its end) takes writes
 *   and write-zeroes past its end, and reads past its end give zeroes, as
 *   QEMU's file driver reads past the end of a file;
 * - changes (write, write-zeroes, trim) on a node that is not writable are
 *   "read-only";
 * - a zeroing that must be fast on a node without `fastZero` is
 *   "not-supported".
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { MemoryNode } from "./memory.ts";
 * const node = new MemoryNode(4096, { readOnly: true });
 * await assert.rejects(node.write(0, new Uint8Array(1)), { kind: "read-only" });
 * await assert.rejects(node.read(4000, new Uint8Array(100)), { kind: "invalid" });
 * ```
 * @module
 */

import { DenbdError } from "../errors.ts";
import type {
  BlockExtent,
  BlockNode,
  NodeCapabilities,
  NodeChild,
  WriteOptions,
  ZeroOptions,
} from "./node.ts";

/** How a {@linkcode CheckedNode} checks ranges. */
export interface CheckedNodeOptions {
  /** Writes past the end grow the node; reads past the end give zeroes. */
  readonly growable?: boolean;
}

/**
 * A block node whose public methods check each request, then call the
 * driver's protected method of the same name (`driverRead` for `read`...).
 */
export abstract class CheckedNode implements BlockNode {
  readonly #growable: boolean;

  /** A node that checks ranges as `options` say. */
  constructor(options: CheckedNodeOptions = {}) {
    this.#growable = Boolean(options.growable);
  }

  /** Writes past the end are taken (the driver grows the node); reads past the end give zeroes. */
  get growable(): boolean {
    return this.#growable;
  }

  /** Size in bytes. */
  abstract readonly size: number;
  /** The nodes this one is built on, by role. */
  abstract readonly children: readonly NodeChild[];
  /** What this node can do. */
  abstract readonly capabilities: NodeCapabilities;
  /** The alignment requests should respect for efficiency. */
  abstract readonly requestAlignment: number;

  /** Fill `into` with the bytes at `offset` (zeroes past the end of a growable node). */
  read(offset: number, into: Uint8Array): Promise<void> {
    try {
      checkRange("read", offset, into.length);
      const size = this.size;
      if (offset + into.length <= size) return this.driverRead(offset, into);
      if (!this.growable) throw beyondEnd("read", offset, into.length, size, "invalid");
      const within = Math.max(0, size - offset);
      into.fill(0, within);
      return within > 0 ? this.driverRead(offset, into.subarray(0, within)) : Promise.resolve();
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Fill `into` at once where the driver can (see {@linkcode BlockNode.readNow}). */
  readNow(offset: number, into: Uint8Array): boolean {
    return isRange(offset, into.length) && offset + into.length <= this.size &&
      this.driverReadNow(offset, into);
  }

  /** Store `data` at once where the driver can (see {@linkcode BlockNode.writeNow}). */
  writeNow(offset: number, data: Uint8Array, options: WriteOptions = {}): boolean {
    return isRange(offset, data.length) && this.capabilities.writable &&
      offset + data.length <= this.size && this.driverWriteNow(offset, data, options);
  }

  /** Whether the range is known at once to be data (see {@linkcode BlockNode.holdsDataNow}). */
  holdsDataNow(offset: number, length: number): boolean {
    return isRange(offset, length) && length > 0 && offset + length <= this.size &&
      this.driverHoldsDataNow(offset, length);
  }

  /** Store `data` at `offset`. */
  write(offset: number, data: Uint8Array, options: WriteOptions = {}): Promise<void> {
    try {
      this.#checkChange("write", offset, data.length, true);
      return this.driverWrite(offset, data, options);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Make `length` bytes at `offset` read as zeroes. */
  writeZeroes(offset: number, length: number, options: ZeroOptions = {}): Promise<void> {
    try {
      this.#checkChange("write zeroes", offset, length, true);
      if (options.fast && !this.capabilities.fastZero) {
        throw new DenbdError("not-supported", "write zeroes: this node cannot zero fast");
      }
      return this.driverWriteZeroes(offset, length, options);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Hint that `length` bytes at `offset` are no longer needed. */
  trim(offset: number, length: number, options: WriteOptions = {}): Promise<void> {
    try {
      this.#checkChange("trim", offset, length, false);
      return this.driverTrim(offset, length, options);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Hint that `length` bytes at `offset` will be read soon. */
  cache(offset: number, length: number): Promise<void> {
    try {
      this.#checkWithin("cache", offset, length);
      return this.driverCache(offset, length);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** The allocation status from `offset` (see {@linkcode BlockNode.blockStatus}); none of 0 bytes. */
  blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    try {
      this.#checkWithin("block status", offset, length);
      return length === 0 ? Promise.resolve([]) : this.driverBlockStatus(offset, length);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Make every completed write durable. */
  abstract flush(): Promise<void>;
  /** Release every resource. Idempotent. */
  abstract close(): Promise<void>;

  /** Read a range within the node. */
  protected abstract driverRead(offset: number, into: Uint8Array): Promise<void>;
  /** Write a range (past the end only on a growable node, which then grows). */
  protected abstract driverWrite(
    offset: number,
    data: Uint8Array,
    options: WriteOptions,
  ): Promise<void>;
  /** Zero a range (past the end only on a growable node, which then grows). */
  protected abstract driverWriteZeroes(
    offset: number,
    length: number,
    options: ZeroOptions,
  ): Promise<void>;
  /** Discard a range within the node. */
  protected abstract driverTrim(
    offset: number,
    length: number,
    options: WriteOptions,
  ): Promise<void>;
  /** Prefetch a range within the node. */
  protected abstract driverCache(offset: number, length: number): Promise<void>;
  /** Status of a non-empty range within the node. */
  protected abstract driverBlockStatus(offset: number, length: number): Promise<BlockExtent[]>;

  /** Read a range within the node without waiting; false (the default) when it cannot. */
  protected driverReadNow(_offset: number, _into: Uint8Array): boolean {
    return false;
  }
  /** Write a range within the node without waiting; false (the default) when it cannot. */
  protected driverWriteNow(_offset: number, _data: Uint8Array, _options: WriteOptions): boolean {
    return false;
  }
  /** Whether a non-empty range within the node is known at once to be data; false by default. */
  protected driverHoldsDataNow(_offset: number, _length: number): boolean {
    return false;
  }

  /** The error of a change refused because the node is read-only. */
  protected readOnlyError(): DenbdError {
    return new DenbdError("read-only", "node is read-only");
  }

  #checkChange(what: string, offset: number, length: number, grows: boolean): void {
    checkRange(what, offset, length);
    if (!this.capabilities.writable) throw this.readOnlyError();
    const size = this.size;
    if (offset + length > size && !(grows && this.growable)) {
      throw beyondEnd(what, offset, length, size, grows ? "no-space" : "invalid");
    }
  }

  #checkWithin(what: string, offset: number, length: number): void {
    checkRange(what, offset, length);
    const size = this.size;
    if (offset + length > size) throw beyondEnd(what, offset, length, size, "invalid");
  }
}

/** Whether `offset` and `length` are non-negative safe integers with a safe end. */
function isRange(offset: number, length: number): boolean {
  return Number.isSafeInteger(offset) && offset >= 0 && Number.isSafeInteger(length) &&
    length >= 0 && Number.isSafeInteger(offset + length);
}

function checkRange(what: string, offset: number, length: number): void {
  if (!isRange(offset, length)) {
    throw new DenbdError("invalid", `${what}: invalid range of ${length} bytes at ${offset}`);
  }
}

function beyondEnd(
  what: string,
  offset: number,
  length: number,
  size: number,
  kind: "invalid" | "no-space",
): DenbdError {
  return new DenbdError(
    kind,
    `${what} of ${length} bytes at ${offset} is beyond the end of the node (${size})`,
  );
}
