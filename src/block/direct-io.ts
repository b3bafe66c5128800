/**
 * O_DIRECT I/O at any offset and length, on top of {@linkcode LibcIo}: the
 * alignment an O_DIRECT descriptor needs is probed, and unaligned requests
 * are completed through aligned bounce buffers.
 *
 * @module
 */

import { DenbdError } from "../errors.ts";
import type { FileIo } from "./file-io.ts";
import { Errno, errnoError, type Libc } from "./libc.ts";
import type { LibcIo } from "./libc-io.ts";
import { RangeLock } from "./range-lock.ts";

/** O_DIRECT request alignments tried, smallest first. */
const PROBED_ALIGNMENTS = [512, 4096];
/** Memory alignment of bounce buffers: enough for any O_DIRECT alignment probed. */
const BUFFER_ALIGNMENT = 4096;

/** The smallest request alignment an O_DIRECT read on `fd` accepts. */
export async function probeDirectAlignment(libc: Libc, fd: number): Promise<number> {
  const buffer = alignedBuffer(Math.max(...PROBED_ALIGNMENTS));
  for (const alignment of PROBED_ALIGNMENTS) {
    const result = await libc.pread(fd, buffer.subarray(0, alignment), 0);
    if (result >= 0) return alignment;
    if (result !== -Errno.EINVAL) throw errnoError("pread", -result);
  }
  throw new DenbdError("invalid", "O_DIRECT reads fail at every alignment tried");
}

/**
 * O_DIRECT I/O at any offset and length: unaligned requests are completed
 * by read-modify-write of whole blocks through aligned bounce buffers, and
 * every change holds a lock on its blocks so that overlapping requests never
 * undo each other. Bytes from `tailStart` (the partial last block, if any, and
 * whatever lies past the end) go through a buffered descriptor, so they behave
 * as they do without O_DIRECT.
 */
export class DirectIo implements FileIo {
  readonly #direct: LibcIo;
  readonly #tail: LibcIo;
  readonly #alignment: number;
  readonly #tailStart: number;
  readonly #blocks = new RangeLock();

  /** Combine an O_DIRECT descriptor with the buffered one for bytes from `tailStart`. */
  constructor(direct: LibcIo, tail: LibcIo, alignment: number, tailStart: number) {
    this.#direct = direct;
    this.#tail = tail;
    this.#alignment = alignment;
    this.#tailStart = tailStart;
  }

  /** Never done at once: O_DIRECT transfers go through the pool. */
  readNow(): boolean {
    return false;
  }

  /** Never done at once, as reads. */
  writeNow(): boolean {
    return false;
  }

  async read(offset: number, into: Uint8Array): Promise<void> {
    const split = this.#bytesBeforeTail(offset, into.length);
    if (split > 0) await this.#readBlocks(offset, into.subarray(0, split));
    if (split < into.length) await this.#tail.read(offset + split, into.subarray(split));
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    const release = await this.#lockBlocks(offset, data.length);
    try {
      const split = this.#bytesBeforeTail(offset, data.length);
      if (split > 0) await this.#writeBlocks(offset, data.subarray(0, split));
      if (split < data.length) await this.#tail.write(offset + split, data.subarray(split));
    } finally {
      release();
    }
  }

  async allocate(mode: number, offset: number, length: number): Promise<boolean> {
    const release = await this.#lockBlocks(offset, length);
    try {
      return await this.#direct.allocate(mode, offset, length);
    } finally {
      release();
    }
  }

  /** fdatasync covers the whole inode, bytes written through the tail descriptor included. */
  syncData(): Promise<void> {
    return this.#direct.syncData();
  }

  /** Nothing to do: reads bypass the page cache. */
  prefetch(): Promise<void> {
    return Promise.resolve();
  }

  seek(offset: number, whence: number): number | undefined {
    return this.#direct.seek(offset, whence);
  }

  async close(): Promise<void> {
    try {
      await this.#tail.close();
    } finally {
      await this.#direct.close();
    }
  }

  #bytesBeforeTail(offset: number, length: number): number {
    return Math.min(length, Math.max(0, this.#tailStart - offset));
  }

  #lockBlocks(offset: number, length: number): Promise<() => void> {
    const start = alignDown(offset, this.#alignment);
    return this.#blocks.acquire(start, alignUp(offset + length, this.#alignment));
  }

  #isAligned(offset: number, buffer: Uint8Array): boolean {
    const alignment = this.#alignment;
    return offset % alignment === 0 && buffer.length % alignment === 0 &&
      addressOf(buffer) % alignment === 0;
  }

  async #readBlocks(offset: number, into: Uint8Array): Promise<void> {
    if (this.#isAligned(offset, into)) return await this.#direct.read(offset, into);
    const start = alignDown(offset, this.#alignment);
    const bounce = alignedBuffer(alignUp(offset + into.length, this.#alignment) - start);
    await this.#direct.read(start, bounce);
    into.set(bounce.subarray(offset - start, offset - start + into.length));
  }

  /** Write whole blocks, reading the partial first and last ones first; blocks are locked. */
  async #writeBlocks(offset: number, data: Uint8Array): Promise<void> {
    if (this.#isAligned(offset, data)) return await this.#direct.write(offset, data);
    const block = this.#alignment;
    const end = offset + data.length;
    const start = alignDown(offset, block);
    const stop = alignUp(end, block);
    const bounce = alignedBuffer(stop - start);
    const headRead = start < offset;
    if (headRead) await this.#direct.read(start, bounce.subarray(0, block));
    const lastIsHead = stop - block === start;
    if (end < stop && !(lastIsHead && headRead)) {
      await this.#direct.read(stop - block, bounce.subarray(bounce.length - block));
    }
    bounce.set(data, offset - start);
    await this.#direct.write(start, bounce);
  }
}

/** `value` rounded down to a multiple of `alignment`. */
export function alignDown(value: number, alignment: number): number {
  return value - (value % alignment);
}

/** `value` rounded up to a multiple of `alignment`. */
function alignUp(value: number, alignment: number): number {
  return alignDown(value + alignment - 1, alignment);
}

/** The memory address of `buffer`'s first byte. */
function addressOf(buffer: Uint8Array): number {
  return Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buffer)));
}

/** A zeroed buffer of `length` bytes whose address is a multiple of BUFFER_ALIGNMENT. */
export function alignedBuffer(length: number): Uint8Array {
  const raw = new Uint8Array(length + BUFFER_ALIGNMENT);
  const skip = (BUFFER_ALIGNMENT - (addressOf(raw) % BUFFER_ALIGNMENT)) % BUFFER_ALIGNMENT;
  return raw.subarray(skip, skip + length);
}
