/**
 * The few libc calls the file node needs, through `Deno.dlopen` (Linux only).
 *
 * Every wrapper returns a plain number: the call's result when it is zero or
 * more, `-errno` when it failed. Callers turn a negative result into an error
 * with {@linkcode errnoError} or handle the errno values they expect (EAGAIN,
 * ENXIO, EOPNOTSUPP).
 *
 * errno and the worker thread: a `nonblocking: true` call runs on a thread of
 * Deno's blocking pool, and errno is thread-local, so it cannot be read after
 * the promise resolves. When such a call fails, the wrapper repeats it once
 * synchronously on the main thread and reads errno there. This is sound for
 * the positional calls used here (pread, pwrite, fallocate): repeating them
 * has the same effect as the first attempt, and failures are rare enough that
 * blocking the event loop for one retry does not matter. fdatasync is the
 * exception: the kernel reports a writeback error once per open file, so a
 * retry may succeed after a real failure; a failed asynchronous fdatasync is
 * therefore reported as EIO whatever the retry says.
 *
 * @example
 * ```ts
 * import { loadLibc, OpenFlag } from "./libc.ts";
 * const libc = loadLibc(); // null where FFI is not permitted
 * if (libc) {
 *   const fd = libc.open("/etc/hostname", OpenFlag.READ_ONLY | OpenFlag.CLOSE_ON_EXEC);
 *   if (fd >= 0) libc.close(fd);
 * }
 * ```
 * @module
 */

import { DenbdError, type ErrorKind } from "../errors.ts";

/** errno values (Linux) that the block layer inspects or maps to a kind. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  EAGAIN: 11,
  EACCES: 13,
  EINVAL: 22,
  EFBIG: 27,
  ENOSPC: 28,
  EROFS: 30,
  ENOSYS: 38,
  EOPNOTSUPP: 95,
  EDQUOT: 122,
} as const;

/** Flags of open(2) (Linux; O_DIRECT differs between architectures). */
export const OpenFlag = {
  READ_ONLY: 0,
  WRITE_ONLY: 1,
  READ_WRITE: 2,
  CREATE: 0o100,
  DIRECT: Deno.build.arch === "aarch64" ? 0o200000 : 0o40000,
  CLOSE_ON_EXEC: 0o2000000,
} as const;

/** `whence` values of lseek(2). */
export const Whence = { END: 2, DATA: 3, HOLE: 4 } as const;

/** `mode` bits of fallocate(2). */
export const FallocateMode = { KEEP_SIZE: 0x1, PUNCH_HOLE: 0x2, ZERO_RANGE: 0x10 } as const;

/** Commands of fcntl(2) for open-file-description byte-range locks. */
export const LockCommand = { GET: 36, SET: 37 } as const;

/** `l_type` values of struct flock. */
export const LockType = { READ: 0, WRITE: 1, UNLOCK: 2 } as const;

/** Size of struct flock on 64-bit Linux. */
export const FLOCK_SIZE = 32;

/** preadv2 flag: fail with EAGAIN instead of waiting for the disk. */
const RWF_NOWAIT = 0x8;
/** posix_fadvise advice: start reading the range into the page cache. */
const POSIX_FADV_WILLNEED = 3;

/** Calls that have a variant running on Deno's worker pool, by their C names. */
const POOLED_CALLS = {
  pread: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  pwrite: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  fallocate: { parameters: ["i32", "i32", "i64", "i64"], result: "i32" },
  fdatasync: { parameters: ["i32"], result: "i32" },
  posix_fadvise: { parameters: ["i32", "i64", "i64", "i32"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The same call declared to run on the worker pool (its result becomes a Promise). */
function onPool<const Name extends keyof typeof POOLED_CALLS>(name: Name) {
  return { ...POOLED_CALLS[name], name, nonblocking: true } as const;
}

const SYMBOLS = {
  __errno_location: { parameters: [], result: "pointer" },
  strerror: { parameters: ["i32"], result: "pointer" },
  open: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  preadv2: { parameters: ["i32", "buffer", "i32", "i64", "i32"], result: "isize" },
  lseek: { parameters: ["i32", "i64", "i32"], result: "i64" },
  fcntl: { parameters: ["i32", "i32", "buffer"], result: "i32" },
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  pread: POOLED_CALLS.pread,
  pwrite: POOLED_CALLS.pwrite,
  fallocate: POOLED_CALLS.fallocate,
  fdatasync: POOLED_CALLS.fdatasync,
  preadAsync: onPool("pread"),
  pwriteAsync: onPool("pwrite"),
  fallocateAsync: onPool("fallocate"),
  fdatasyncAsync: onPool("fdatasync"),
  posixFadviseAsync: onPool("posix_fadvise"),
} as const satisfies Deno.ForeignLibraryInterface;

type Symbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** The loaded library; `null` once loading was refused, `undefined` before trying. */
let loaded: Libc | null | undefined;

/**
 * The process's libc, loaded on first use; `null` when FFI is not permitted
 * (no `--allow-ffi`) or the platform is not Linux.
 */
export function loadLibc(): Libc | null {
  if (loaded === undefined) loaded = tryLoad();
  return loaded;
}

function tryLoad(): Libc | null {
  if (Deno.build.os !== "linux") return null;
  try {
    return new Libc(Deno.dlopen("libc.so.6", SYMBOLS).symbols);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) return null;
    if (error instanceof Deno.errors.PermissionDenied) return null;
    throw error;
  }
}

/** Bound libc calls; every method returns its result or `-errno`. */
export class Libc {
  readonly #symbols: Symbols;
  readonly #errno: Deno.UnsafePointerView;
  /**
   * One struct iovec reused by every synchronous preadv2 call, as 32-bit
   * halves (little-endian), so its pointer and length need no BigInts.
   */
  readonly #iovec = new Uint32Array(4);

  /** Wrap the symbols of an opened libc. */
  constructor(symbols: Symbols) {
    this.#symbols = symbols;
    this.#errno = new Deno.UnsafePointerView(symbols.__errno_location()!);
  }

  /** open(2) `path` with `flags` (and `mode` for a file it creates); returns the descriptor. */
  open(path: string, flags: number, mode = 0): number {
    const cPath = new TextEncoder().encode(`${path}\0`);
    return this.#retrySync(() => this.#symbols.open(cPath, flags, mode));
  }

  /** ftruncate(2) `fd` to `length` bytes. */
  ftruncate(fd: number, length: number): number {
    return this.#retrySync(() => this.#symbols.ftruncate(fd, BigInt(length)));
  }

  /** close(2) `fd`. */
  close(fd: number): number {
    const result = this.#symbols.close(fd);
    return result < 0 ? -this.#errno.getInt32() : result;
  }

  /**
   * Read into `into` from `offset` only if the bytes are already in the page
   * cache (preadv2 with RWF_NOWAIT), on the calling thread; `-EAGAIN` when
   * the read would wait for the disk. May return fewer bytes than asked.
   * Not retried on EINTR: the caller falls back to {@linkcode Libc.pread}.
   */
  preadCached(fd: number, into: Uint8Array, offset: number): number {
    const address = Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(into)));
    this.#iovec[0] = address % 2 ** 32;
    this.#iovec[1] = Math.floor(address / 2 ** 32);
    this.#iovec[2] = into.length;
    const result = Number(this.#symbols.preadv2(fd, this.#iovec, 1, BigInt(offset), RWF_NOWAIT));
    return result >= 0 ? result : -this.#errno.getInt32();
  }

  /** pread(2) on a worker thread; may return fewer bytes than asked. */
  async pread(fd: number, into: Uint8Array, offset: number): Promise<number> {
    const length = BigInt(into.length);
    const result = Number(await this.#symbols.preadAsync(fd, into, length, BigInt(offset)));
    if (result >= 0) return result;
    return this.#retrySync(() => Number(this.#symbols.pread(fd, into, length, BigInt(offset))));
  }

  /** pwrite(2) on a worker thread; may write fewer bytes than asked. */
  async pwrite(fd: number, data: Uint8Array, offset: number): Promise<number> {
    const length = BigInt(data.length);
    const result = Number(await this.#symbols.pwriteAsync(fd, data, length, BigInt(offset)));
    if (result >= 0) return result;
    return this.#retrySync(() => Number(this.#symbols.pwrite(fd, data, length, BigInt(offset))));
  }

  /** pwrite(2) on the calling thread; may write fewer bytes than asked. */
  pwriteNow(fd: number, data: Uint8Array, offset: number): number {
    const length = BigInt(data.length);
    return this.#retrySync(() => Number(this.#symbols.pwrite(fd, data, length, BigInt(offset))));
  }

  /** lseek(2); returns the new offset. */
  lseek(fd: number, offset: number, whence: number): number {
    return this.#retrySync(() => Number(this.#symbols.lseek(fd, BigInt(offset), whence)));
  }

  /** fallocate(2) on a worker thread. */
  async fallocate(fd: number, mode: number, offset: number, length: number): Promise<number> {
    const start = BigInt(offset);
    const count = BigInt(length);
    if (await this.#symbols.fallocateAsync(fd, mode, start, count) === 0) return 0;
    return this.#retrySync(() => this.#symbols.fallocate(fd, mode, start, count));
  }

  /** fdatasync(2) on a worker thread; a failure is never retried away (see the module doc). */
  async fdatasync(fd: number): Promise<number> {
    if (await this.#symbols.fdatasyncAsync(fd) === 0) return 0;
    const retried = this.#retrySync(() => this.#symbols.fdatasync(fd));
    return retried < 0 ? retried : -Errno.EIO;
  }

  /** posix_fadvise(2) WILLNEED on a worker thread (it returns the error number itself). */
  async prefetch(fd: number, offset: number, length: number): Promise<number> {
    const errno = await this.#symbols.posixFadviseAsync(
      fd,
      BigInt(offset),
      BigInt(length),
      POSIX_FADV_WILLNEED,
    );
    return errno === 0 ? 0 : -errno;
  }

  /** fcntl(2) with a byte-range lock command and a struct flock of {@linkcode FLOCK_SIZE} bytes. */
  fcntlLock(fd: number, command: number, flock: Uint8Array): number {
    return this.#retrySync(() => this.#symbols.fcntl(fd, command, flock));
  }

  /** The C library's text for `errno`. */
  strerror(errno: number): string {
    const text = this.#symbols.strerror(errno);
    return text ? Deno.UnsafePointerView.getCString(text) : `Unknown error ${errno}`;
  }

  /** Run a synchronous call until it is not interrupted; `-errno` on failure. */
  #retrySync(call: () => number): number {
    for (;;) {
      const result = call();
      if (result >= 0) return result;
      const errno = this.#errno.getInt32();
      if (errno !== Errno.EINTR) return -errno;
    }
  }
}

/**
 * A struct flock (x86_64 and aarch64 Linux) locking `length` bytes from
 * `start` (0 meaning "to the end of the file") with lock `type`, pid 0.
 */
export function encodeFlock(type: number, start: number, length: number): Uint8Array {
  const bytes = new Uint8Array(FLOCK_SIZE);
  const view = new DataView(bytes.buffer);
  view.setInt16(0, type, true); // l_type
  view.setInt16(2, 0, true); // l_whence = SEEK_SET
  view.setBigInt64(8, BigInt(start), true); // l_start
  view.setBigInt64(16, BigInt(length), true); // l_len; l_pid stays 0, as OFD locks require
  return bytes;
}

/** The error kind for an errno value. */
export function errnoKind(errno: number): ErrorKind {
  switch (errno) {
    case Errno.ENOSPC:
    case Errno.EDQUOT:
    case Errno.EFBIG:
      return "no-space";
    case Errno.EROFS:
    case Errno.EPERM:
    case Errno.EACCES:
      return "read-only";
    case Errno.EOPNOTSUPP:
      return "not-supported";
    case Errno.EINVAL:
      return "invalid";
    case Errno.ENOENT:
      return "not-found";
    case Errno.EAGAIN:
      return "busy";
    default:
      return "io";
  }
}

/** An error for `operation` failing with `errno`, e.g. "pwrite: No space left on device". */
export function errnoError(operation: string, errno: number): DenbdError {
  const text = loadLibc()?.strerror(errno) ?? `errno ${errno}`;
  return new DenbdError(errnoKind(errno), `${operation}: ${text}`);
}
