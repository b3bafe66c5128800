/**
 * Positional I/O on one file descriptor through libc (libc.ts,
 * loaded with FFI): reads first try the page cache on the calling
 * thread (preadv2 RWF_NOWAIT, a few microseconds on a hit) and finish on
 * Deno's blocking pool otherwise; small whole-page writes to a buffered
 * descriptor also run on the calling thread; fallocate and fdatasync always
 * run on the pool.
 *
 * @module
 */

import { DenbdError } from "../errors.ts";
import { endOfFile, type FileIo } from "./file-io.ts";
import { Errno, errnoError, type Libc, Whence } from "./libc.ts";

/**
 * Largest request served from or into the page cache on the calling thread.
 * A call on the event loop costs far less than a worker-thread call (4 KiB:
 * about 2.5 us against 15-25 us), and for large requests too the pool's
 * dispatch and wake-up cost the event loop more than the copy it saves: 1 MiB
 * reads took about half the server CPU each on the calling thread (2026-11-29,
 * 2 CPUs, fio on the other). Above this a request goes to the pool, so one
 * call never holds the event loop for long.
 */
const CALLING_THREAD_MAX = 4 * 1024 * 1024;
/**
 * Page size assumed for writes on the calling thread: a write covering whole
 * pages never waits for the disk to read a page in first.
 */
const PAGE_SIZE = 4096;

/** Positional I/O on one descriptor through libc. */
export class LibcIo implements FileIo {
  readonly #libc: Libc;
  readonly #fd: number;
  /** Try a page-cache read on the calling thread before using the pool. */
  #readCachedFirst: boolean;
  /**
   * Where the last page-cache read on the calling thread missed: the read
   * that comes next for the same range (the caller falling back) goes
   * straight to the pool instead of asking the page cache twice.
   */
  #lastMiss = { offset: -1, length: 0 };
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
      const justMissed = offset === this.#lastMiss.offset && into.length === this.#lastMiss.length;
      const tryCache = this.#readCachedFirst && into.length > 0 &&
        into.length <= CALLING_THREAD_MAX && !justMissed;
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

  /** The whole read from the page cache on the calling thread, when it is all there. */
  readNow(offset: number, into: Uint8Array): boolean {
    if (this.#closed || !this.#readCachedFirst || into.length > CALLING_THREAD_MAX) return false;
    let done = 0;
    while (done < into.length) {
      const count = this.#readCached(offset + done, done === 0 ? into : into.subarray(done));
      if (count === 0) {
        this.#lastMiss = { offset, length: into.length };
        return false;
      }
      done += count;
    }
    return true;
  }

  /** A small whole-page write into the page cache on the calling thread. */
  writeNow(offset: number, data: Uint8Array): boolean {
    if (this.#closed || !this.#writesNow(offset, data)) return false;
    for (let done = 0; done < data.length;) {
      const count = this.#libc.pwriteNow(
        this.#fd,
        done === 0 ? data : data.subarray(done),
        offset + done,
      );
      if (count <= 0) return false;
      done += count;
    }
    return true;
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
      const now = this.#writesNow(offset, data);
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

  /** Whether a write of `data` at `offset` runs on the calling thread: small, whole pages, buffered. */
  #writesNow(offset: number, data: Uint8Array): boolean {
    return this.#buffered && data.length <= CALLING_THREAD_MAX &&
      offset % PAGE_SIZE === 0 && data.length % PAGE_SIZE === 0;
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
