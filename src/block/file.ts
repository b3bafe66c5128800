/**
 * A raw file or block device as a block node, with QEMU's cache options
 * (direct, no-flush) and discard modes, QEMU-compatible image locking, holes (SEEK_DATA/SEEK_HOLE)
 * and fallocate-based zeroing and discard.
 *
 * I/O goes through libc (see {@linkcode loadLibc}): reads first try the page
 * cache on the calling thread (preadv2 RWF_NOWAIT, a few microseconds on a
 * hit) and finish on Deno's blocking pool otherwise; writes, fallocate and
 * fdatasync always run on the pool. Where FFI is not permitted, a small
 * portable fallback serialises plain `Deno.FsFile` reads and writes and
 * reports every byte as data.
 *
 * @example
 * ```ts
 * import { FileNode } from "./file.ts";
 * const node = await FileNode.open("disk.img", { discard: "unmap" });
 * try {
 *   await node.write(0, new Uint8Array(512).fill(1), { fua: true });
 * } finally {
 *   await node.close();
 * }
 * ```
 * @module
 */

import type {
  BlockExtent,
  BlockNode,
  NodeCapabilities,
  WriteOptions,
  ZeroOptions,
} from "./node.ts";
import { DenbdError } from "../errors.ts";
import {
  Errno,
  errnoError,
  errnoKind,
  FallocateMode,
  type Libc,
  loadLibc,
  OpenFlag,
  Whence,
} from "./libc.ts";
import { lockImage, READ_ONLY_IMAGE, WRITABLE_IMAGE } from "./image-lock.ts";

/** qemu-nbd's `--discard` modes. */
export type DiscardMode = "ignore" | "unmap";

/**
 * How {@linkcode FileNode.open} opens a file. The page-cache options are
 * QEMU's `cache.direct` and `cache.no-flush`; writethrough is a property of
 * the export, not of the node.
 */
export interface FileNodeOptions {
  /** Open read-only: writes, zeroing and discards fail with kind "read-only". */
  readonly readOnly?: boolean;
  /** Bypass the page cache (O_DIRECT, aligned I/O); false by default. */
  readonly direct?: boolean;
  /** Ignore flushes and FUA (QEMU's cache=unsafe); false by default. */
  readonly noFlush?: boolean;
  /** "unmap" punches holes on discard; "ignore" (the default) accepts and ignores discards. */
  readonly discard?: DiscardMode;
  /** Take QEMU-compatible image locks (true by default). */
  readonly lock?: boolean;
}

const DISCARD_MODES: readonly DiscardMode[] = ["ignore", "unmap"];

/** Most extents one block status answer returns (the caller asks again for the rest). */
const MAX_EXTENTS = 1024;
/** Size of each write when zeroes must be written as data. */
const ZERO_CHUNK = 1 << 20;
/**
 * Largest request served from or into the page cache on the calling thread.
 * Up to here a call on the event loop beats a worker-thread call clearly
 * (4 KiB: about 2.5 us against 15-25 us); above it the copy itself dominates
 * and is better done on the pool, where it overlaps with the event loop's work.
 */
const CALLING_THREAD_MAX = 256 * 1024;
/**
 * Page size assumed for writes on the calling thread: a write covering whole
 * pages never waits for the disk to read a page in first.
 */
const PAGE_SIZE = 4096;
/** O_DIRECT request alignments tried, smallest first. */
const PROBED_ALIGNMENTS = [512, 4096];
/** Memory alignment of bounce buffers: enough for any O_DIRECT alignment probed. */
const BUFFER_ALIGNMENT = 4096;
const PUNCH_HOLE = FallocateMode.PUNCH_HOLE | FallocateMode.KEEP_SIZE;
const ZERO_RANGE = FallocateMode.ZERO_RANGE | FallocateMode.KEEP_SIZE;

/** A raw image file (or block device) as a block node. */
export class FileNode implements BlockNode {
  /** The path the node was opened with. */
  readonly path: string;
  /** Size in bytes, as it was at open time. */
  readonly size: number;
  /** Derived from the options and from whether libc is available. */
  readonly capabilities: NodeCapabilities;
  /** The probed O_DIRECT alignment when opened `direct`, else 1. */
  readonly requestAlignment: number;
  readonly #io: FileIo;
  /** Flush and FUA really sync (false with noFlush). */
  readonly #flushes: boolean;
  readonly #discard: DiscardMode;
  #zeroes?: Uint8Array;
  #closing?: Promise<void>;

  private constructor(path: string, opened: OpenedFile, options: Required<FileNodeOptions>) {
    this.path = path;
    this.size = opened.size;
    this.requestAlignment = opened.alignment;
    this.#io = opened.io;
    this.#flushes = !options.noFlush;
    this.#discard = options.discard;
    this.capabilities = {
      writable: !options.readOnly,
      flush: this.#flushes,
      trim: opened.native && options.discard === "unmap",
      zero: opened.native,
      fastZero: opened.native,
      cache: opened.native && !options.direct,
      multiConn: true,
      blockStatus: opened.native,
    };
  }

  /**
   * Open `path` (a regular file or a block device). Throws kind "not-found",
   * "read-only" (no permission), "busy" (locked by another process) or
   * "invalid" (bad options, or no O_DIRECT support when `direct`).
   */
  static async open(path: string, options: FileNodeOptions = {}): Promise<FileNode> {
    const settled = settleOptions(options);
    const libc = loadLibc();
    const opened = libc
      ? await openWithLibc(libc, path, settled)
      : await PortableIo.open(path, settled.readOnly);
    return new FileNode(path, opened, settled);
  }

  /** Fill `into` with the bytes at `offset`; a file that shrank gives kind "io". */
  read(offset: number, into: Uint8Array): Promise<void> {
    return this.#io.read(offset, into);
  }

  /** Store `data` at `offset`, durably first when `fua` asks (unless noFlush). */
  async write(offset: number, data: Uint8Array, options: WriteOptions = {}): Promise<void> {
    this.#checkWritable();
    await this.#io.write(offset, data);
    await this.#syncIf(options.fua);
  }

  /**
   * Zero a range: punch it when `mayTrim` (whatever the discard mode, as
   * QEMU's file driver does for a request made on it), else
   * fallocate ZERO_RANGE; where the file system has neither, write zeroes
   * (or fail with kind "not-supported" when `fast`).
   */
  async writeZeroes(offset: number, length: number, options: ZeroOptions = {}): Promise<void> {
    this.#checkWritable();
    if (length === 0) return;
    if (!await this.#zeroWithoutWriting(offset, length, options.mayTrim)) {
      if (options.fast) {
        throw new DenbdError("not-supported", "write zeroes: the file system cannot zero fast");
      }
      await this.#writeZeroBuffers(offset, length);
    }
    await this.#syncIf(options.fua);
  }

  /** Punch a hole with discard "unmap" (where the file system can); nothing with "ignore". */
  async trim(offset: number, length: number, options: WriteOptions = {}): Promise<void> {
    this.#checkWritable();
    if (this.#discard !== "unmap" || length === 0) return;
    if (await this.#io.allocate(PUNCH_HOLE, offset, length)) {
      await this.#syncIf(options.fua);
    }
  }

  /** fdatasync, except with noFlush. */
  async flush(): Promise<void> {
    if (this.#flushes) await this.#io.syncData();
  }

  /** Ask the kernel to read the range ahead (no effect with O_DIRECT or without libc). */
  cache(offset: number, length: number): Promise<void> {
    return this.#io.prefetch(offset, length);
  }

  /**
   * Holes (zero, unallocated) and data from SEEK_HOLE/SEEK_DATA, at most
   * {@linkcode MAX_EXTENTS} of them; everything is data where the file
   * system cannot tell.
   */
  // deno-lint-ignore require-await -- async so that a closed file rejects instead of throwing
  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    const end = offset + length;
    const extents: BlockExtent[] = [];
    let position = offset;
    while (position < end && extents.length < MAX_EXTENTS) {
      const hole = this.#io.seek(position, Whence.HOLE);
      if (hole === undefined) break;
      const data = hole > position;
      const next = data ? hole : this.#io.seek(position, Whence.DATA);
      if (next === undefined || next <= position) break;
      const stop = Math.min(next, end);
      extents.push({ length: stop - position, data, zero: !data });
      position = stop;
    }
    if (extents.length === 0) extents.push({ length, data: true, zero: false });
    return extents;
  }

  /** Wait for requests in flight, then close the file (releasing its image locks). */
  close(): Promise<void> {
    this.#closing ??= this.#io.close();
    return this.#closing;
  }

  #checkWritable(): void {
    if (!this.capabilities.writable) {
      throw new DenbdError("read-only", `'${this.path}' is opened read-only`);
    }
  }

  /** Make a change durable when the request asked for FUA. */
  async #syncIf(fua: boolean | undefined): Promise<void> {
    if (fua && this.#flushes) await this.#io.syncData();
  }

  async #zeroWithoutWriting(offset: number, length: number, mayTrim?: boolean): Promise<boolean> {
    if (mayTrim && await this.#io.allocate(PUNCH_HOLE, offset, length)) return true;
    return await this.#io.allocate(ZERO_RANGE, offset, length);
  }

  /** Write zeroes in bounded chunks, never allocating a buffer of the whole length. */
  async #writeZeroBuffers(offset: number, length: number): Promise<void> {
    const zeroes = this.#zeroes ??= this.requestAlignment > 1
      ? alignedBuffer(ZERO_CHUNK)
      : new Uint8Array(ZERO_CHUNK);
    for (let done = 0; done < length; done += zeroes.length) {
      const piece = Math.min(zeroes.length, length - done);
      await this.#io.write(offset + done, zeroes.subarray(0, piece));
    }
  }
}

function settleOptions(options: FileNodeOptions): Required<FileNodeOptions> {
  const settled = {
    readOnly: options.readOnly ?? false,
    direct: options.direct ?? false,
    noFlush: options.noFlush ?? false,
    discard: options.discard ?? "ignore",
    lock: options.lock ?? true,
  };
  if (!DISCARD_MODES.includes(settled.discard)) {
    throw new DenbdError("invalid", `invalid discard mode '${settled.discard}'`);
  }
  return settled;
}

/** The primitive operations FileNode builds on, one implementation per way of reaching the file. */
interface FileIo {
  /** Fill `into` from `offset`; reaching the end of the file first is kind "io". */
  read(offset: number, into: Uint8Array): Promise<void>;
  /** Store all of `data` at `offset`. */
  write(offset: number, data: Uint8Array): Promise<void>;
  /** fallocate(2) with `mode`; false when the file system does not support it. */
  allocate(mode: number, offset: number, length: number): Promise<boolean>;
  /** fdatasync(2). */
  syncData(): Promise<void>;
  /** Start reading a range into the page cache. */
  prefetch(offset: number, length: number): Promise<void>;
  /**
   * The next offset at or after `offset` where data (`Whence.DATA`) or a
   * hole (`Whence.HOLE`) starts; Infinity when no data follows; undefined
   * when the file system cannot tell.
   */
  seek(offset: number, whence: number): number | undefined;
  /** Wait for operations in flight, then release the file. */
  close(): Promise<void>;
}

/** A FileIo with what FileNode needs to know about how it was opened. */
interface OpenedFile {
  readonly io: FileIo;
  readonly size: number;
  readonly alignment: number;
  /** Reached through libc (holes, fallocate, fadvise work). */
  readonly native: boolean;
}

async function openWithLibc(
  libc: Libc,
  path: string,
  options: Required<FileNodeOptions>,
): Promise<OpenedFile> {
  const flags = (options.readOnly ? OpenFlag.READ_ONLY : OpenFlag.READ_WRITE) |
    OpenFlag.CLOSE_ON_EXEC;
  const fd = openFd(libc, path, flags | (options.direct ? OpenFlag.DIRECT : 0));
  try {
    if (options.lock) lockImage(fd, path, options.readOnly ? READ_ONLY_IMAGE : WRITABLE_IMAGE);
    const size = libc.lseek(fd, 0, Whence.END);
    if (size < 0) throw errnoError("lseek", -size);
    if (!options.direct) {
      return { io: new LibcIo(libc, fd, true), size, alignment: 1, native: true };
    }
    const alignment = await probeDirectAlignment(libc, fd);
    const direct = new LibcIo(libc, fd, false);
    // The last, partial block cannot be written with O_DIRECT without growing
    // the file, so it (and anything past the end) goes through a buffered
    // descriptor of its own.
    const tail = new LibcIo(libc, openFd(libc, path, flags), true);
    const tailStart = alignDown(size, alignment);
    return { io: new DirectIo(direct, tail, alignment, tailStart), size, alignment, native: true };
  } catch (error) {
    libc.close(fd);
    throw error;
  }
}

function openFd(libc: Libc, path: string, flags: number): number {
  const fd = libc.open(path, flags);
  if (fd < 0) throw errnoError(`Could not open '${path}'`, -fd);
  return fd;
}

/** The smallest request alignment an O_DIRECT read on `fd` accepts. */
async function probeDirectAlignment(libc: Libc, fd: number): Promise<number> {
  const buffer = alignedBuffer(Math.max(...PROBED_ALIGNMENTS));
  for (const alignment of PROBED_ALIGNMENTS) {
    const result = await libc.pread(fd, buffer.subarray(0, alignment), 0);
    if (result >= 0) return alignment;
    if (result !== -Errno.EINVAL) throw errnoError("pread", -result);
  }
  throw new DenbdError("invalid", "O_DIRECT reads fail at every alignment tried");
}

/** Positional I/O on one descriptor through libc. */
class LibcIo implements FileIo {
  readonly #libc: Libc;
  readonly #fd: number;
  /** Try a page-cache read on the calling thread before using the pool. */
  #readCachedFirst: boolean;
  /** Buffered descriptor: small whole-page writes go to the page cache on the calling thread. */
  readonly #buffered: boolean;
  #inFlight = 0;
  #idle?: () => void;
  #closed = false;

  /** Wrap `fd`; `buffered` when it was opened without O_DIRECT. */
  constructor(libc: Libc, fd: number, buffered: boolean) {
    this.#libc = libc;
    this.#fd = fd;
    this.#buffered = buffered;
    this.#readCachedFirst = buffered;
  }

  async read(offset: number, into: Uint8Array): Promise<void> {
    this.#begin();
    try {
      const tryCache = this.#readCachedFirst && into.length > 0 &&
        into.length <= CALLING_THREAD_MAX;
      let done = tryCache ? this.#readCached(offset, into) : 0;
      while (done < into.length) {
        const rest = done === 0 ? into : into.subarray(done);
        const count = await this.#libc.pread(this.#fd, rest, offset + done);
        if (count < 0) throw errnoError("pread", -count);
        if (count === 0) throw endOfFile(offset + done);
        done += count;
      }
    } finally {
      this.#end();
    }
  }

  /**
   * Store `data`. Small writes of whole pages to a buffered descriptor only
   * copy into the page cache, so they run on the calling thread; the rest
   * (partial pages may need a disk read first, large ones a long copy) run on
   * the pool. A write on the calling thread can still be paused by the
   * kernel's dirty-page throttling, which then paces every client alike.
   */
  async write(offset: number, data: Uint8Array): Promise<void> {
    this.#begin();
    try {
      const now = this.#buffered && data.length <= CALLING_THREAD_MAX &&
        offset % PAGE_SIZE === 0 && data.length % PAGE_SIZE === 0;
      for (let done = 0; done < data.length;) {
        const rest = done === 0 ? data : data.subarray(done);
        const count = now
          ? this.#libc.pwriteNow(this.#fd, rest, offset + done)
          : await this.#libc.pwrite(this.#fd, rest, offset + done);
        if (count < 0) throw errnoError("pwrite", -count);
        if (count === 0) {
          throw new DenbdError("io", `pwrite: no progress at offset ${offset + done}`);
        }
        done += count;
      }
    } finally {
      this.#end();
    }
  }

  async allocate(mode: number, offset: number, length: number): Promise<boolean> {
    this.#begin();
    try {
      const result = await this.#libc.fallocate(this.#fd, mode, offset, length);
      if (result >= 0) return true;
      if (result === -Errno.EOPNOTSUPP || result === -Errno.ENOSYS) return false;
      throw errnoError("fallocate", -result);
    } finally {
      this.#end();
    }
  }

  async syncData(): Promise<void> {
    this.#begin();
    try {
      const result = await this.#libc.fdatasync(this.#fd);
      if (result < 0) throw errnoError("fdatasync", -result);
    } finally {
      this.#end();
    }
  }

  async prefetch(offset: number, length: number): Promise<void> {
    this.#begin();
    try {
      const result = await this.#libc.prefetch(this.#fd, offset, length);
      if (result < 0) throw errnoError("posix_fadvise", -result);
    } finally {
      this.#end();
    }
  }

  seek(offset: number, whence: number): number | undefined {
    this.#checkOpen();
    const result = this.#libc.lseek(this.#fd, offset, whence);
    if (result >= 0) return result;
    if (result === -Errno.ENXIO) return whence === Whence.DATA ? Infinity : undefined;
    if (result === -Errno.EINVAL || result === -Errno.EOPNOTSUPP) return undefined;
    throw errnoError("lseek", -result);
  }

  async close(): Promise<void> {
    this.#checkOpen();
    this.#closed = true;
    if (this.#inFlight > 0) await new Promise<void>((resolve) => this.#idle = resolve);
    const result = this.#libc.close(this.#fd);
    if (result < 0) throw errnoError("close", -result);
  }

  /** preadv2 RWF_NOWAIT: the bytes read from the page cache, 0 when it would block. */
  #readCached(offset: number, into: Uint8Array): number {
    const count = this.#libc.preadCached(this.#fd, into, offset);
    if (count >= 0) return count;
    // EAGAIN means "not cached"; any other failure is left to the pool read, which
    // reports it. Without RWF_NOWAIT support (file system or kernel), stop trying.
    if (count === -Errno.EOPNOTSUPP || count === -Errno.EINVAL || count === -Errno.ENOSYS) {
      this.#readCachedFirst = false;
    }
    return 0;
  }

  /** Count an operation in flight, so that close never pulls the descriptor from under it. */
  #begin(): void {
    this.#checkOpen();
    this.#inFlight++;
  }

  #end(): void {
    if (--this.#inFlight === 0) this.#idle?.();
  }

  #checkOpen(): void {
    if (this.#closed) throw new DenbdError("io", "the file is closed");
  }
}

/**
 * O_DIRECT I/O at any offset and length: unaligned requests are completed
 * by read-modify-write of whole blocks through aligned bounce buffers, and
 * every change holds a lock on its blocks so that overlapping requests never
 * undo each other. Bytes from `tailStart` (the partial last block, if any, and
 * whatever lies past the end) go through a buffered descriptor, so they behave
 * as they do without O_DIRECT.
 */
class DirectIo implements FileIo {
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

/**
 * Mutual exclusion over byte ranges: a holder waits until no earlier holder
 * overlaps its range.
 */
class RangeLock {
  readonly #held = new Set<{ start: number; end: number; released: Promise<void> }>();

  /** Wait for [start, end) to be free, take it, and return the function that frees it. */
  async acquire(start: number, end: number): Promise<() => void> {
    for (let other = this.#overlap(start, end); other; other = this.#overlap(start, end)) {
      await other.released;
    }
    const { promise, resolve } = Promise.withResolvers<void>();
    const range = { start, end, released: promise };
    this.#held.add(range);
    return () => {
      this.#held.delete(range);
      resolve();
    };
  }

  #overlap(start: number, end: number) {
    for (const range of this.#held) {
      if (range.start < end && start < range.end) return range;
    }
    return undefined;
  }
}

/**
 * The fallback where FFI is not permitted: `Deno.FsFile` has no positional
 * I/O, so seek-then-transfer pairs run one at a time. No holes, no
 * fallocate, no locking.
 */
class PortableIo implements FileIo {
  readonly #file: Deno.FsFile;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(file: Deno.FsFile) {
    this.#file = file;
  }

  /** Open `path` with Deno's file API and measure its size. */
  static async open(path: string, readOnly: boolean): Promise<OpenedFile> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true, write: !readOnly });
    } catch (error) {
      throw fromDenoError(`Could not open '${path}'`, error);
    }
    try {
      const size = await file.seek(0, Deno.SeekMode.End);
      return { io: new PortableIo(file), size, alignment: 1, native: false };
    } catch (error) {
      file.close();
      throw fromDenoError("seek", error);
    }
  }

  read(offset: number, into: Uint8Array): Promise<void> {
    return this.#serially("read", async () => {
      await this.#file.seek(offset, Deno.SeekMode.Start);
      for (let done = 0; done < into.length;) {
        const count = await this.#file.read(into.subarray(done));
        if (count === null) throw endOfFile(offset + done);
        done += count;
      }
    });
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    return this.#serially("write", async () => {
      await this.#file.seek(offset, Deno.SeekMode.Start);
      for (let done = 0; done < data.length;) {
        const count = await this.#file.write(data.subarray(done));
        if (count === 0) {
          throw new DenbdError("io", `write: no progress at offset ${offset + done}`);
        }
        done += count;
      }
    });
  }

  allocate(): Promise<boolean> {
    return Promise.resolve(false);
  }

  syncData(): Promise<void> {
    return this.#serially("fdatasync", () => this.#file.syncData());
  }

  prefetch(): Promise<void> {
    return Promise.resolve();
  }

  seek(): undefined {
    return undefined;
  }

  close(): Promise<void> {
    return this.#serially("close", () => Promise.resolve(this.#file.close()));
  }

  /** Run `operation` after every earlier one has settled. */
  #serially<T>(name: string, operation: () => Promise<T>): Promise<T> {
    const result = this.#queue.then(operation).catch((error) => {
      throw fromDenoError(name, error);
    });
    this.#queue = result.catch(() => {});
    return result;
  }
}

/** A DenbdError for an error thrown by Deno's file API, keeping its errno's kind. */
function fromDenoError(operation: string, error: unknown): DenbdError {
  if (error instanceof DenbdError) return error;
  const code = (error as { code?: unknown }).code;
  const errno = Object.hasOwn(Errno, String(code)) ? Errno[code as keyof typeof Errno] : Errno.EIO;
  const message = error instanceof Error ? error.message : String(error);
  return new DenbdError(errnoKind(errno), `${operation}: ${message}`, { cause: error });
}

function endOfFile(offset: number): DenbdError {
  return new DenbdError("io", `read: unexpected end of file at offset ${offset} (file shrank?)`);
}

function alignDown(value: number, alignment: number): number {
  return value - (value % alignment);
}

function alignUp(value: number, alignment: number): number {
  return alignDown(value + alignment - 1, alignment);
}

function addressOf(buffer: Uint8Array): number {
  return Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buffer)));
}

/** A zeroed buffer of `length` bytes whose address is a multiple of BUFFER_ALIGNMENT. */
function alignedBuffer(length: number): Uint8Array {
  const raw = new Uint8Array(length + BUFFER_ALIGNMENT);
  const skip = (BUFFER_ALIGNMENT - (addressOf(raw) % BUFFER_ALIGNMENT)) % BUFFER_ALIGNMENT;
  return raw.subarray(skip, skip + length);
}
