/**
 * A raw file or block device as a block node, with QEMU's cache options
 * (direct, no-flush) and discard modes, QEMU-compatible image locking, holes (SEEK_DATA/SEEK_HOLE)
 * and fallocate-based zeroing and discard.
 *
 * I/O goes through libc ({@linkcode LibcIo}), with an alignment layer for
 * O_DIRECT ({@linkcode DirectIo}). Where FFI is not permitted, a small
 * portable fallback ({@linkcode PortableIo}) serialises plain `Deno.FsFile`
 * reads and writes and reports every byte as data.
 *
 * @example
 * ```ts
 * import { FileNode } from "./file.ts";
 * const path = await Deno.makeTempFile();
 * await Deno.truncate(path, 1 << 20);
 * const node = await FileNode.open(path, { discard: "unmap" });
 * try {
 *   await node.write(0, new Uint8Array(512).fill(1), { fua: true });
 * } finally {
 *   await node.close();
 *   await Deno.remove(path);
 * }
 * ```
 * @module
 */

import type {
  BlockExtent,
  NodeCapabilities,
  NodeChild,
  WriteOptions,
  ZeroOptions,
} from "./node.ts";
import { CheckedNode } from "./checked-node.ts";
import { DenbdError, osErrorText } from "../errors.ts";
import { alignDown, alignedBuffer, DirectIo, probeDirectAlignment } from "./direct-io.ts";
import type { FileIo, OpenedFile } from "./file-io.ts";
import { errnoError, FallocateMode, type Libc, loadLibc, OpenFlag, Whence } from "./libc.ts";
import { LibcIo } from "./libc-io.ts";
import { PortableIo } from "./portable-io.ts";
import { ImageLock } from "./image-lock.ts";
import { KnownData } from "./known-data.ts";
import {
  lockRequestOf,
  type PermissionGrant,
  type PermissionHolder,
  type PermissionRequest,
} from "./permissions.ts";
import { setImmediate } from "node:timers";

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
  /**
   * Take QEMU-compatible image locks for the node's users (true by
   * default): the lock bytes follow the permissions users take with
   * `takePermissions` (permissions.ts); none are taken at open.
   */
  readonly lock?: boolean;
  /**
   * Take writes and write-zeroes past the end and grow, reading zeroes past
   * the end (the file under a qcow2 node); false by default. Works with
   * `direct`: bytes past the size at open go through a buffered descriptor.
   */
  readonly growable?: boolean;
}

const DISCARD_MODES: readonly DiscardMode[] = ["ignore", "unmap"];

/** Most extents one block status answer returns (the caller asks again for the rest). */
const MAX_EXTENTS = 1024;
/**
 * lseek calls (SEEK_HOLE/SEEK_DATA, synchronous on the event loop) made in
 * one turn of the event loop, by every file node together: scanning a
 * fragmented file waits for the next turn beyond this, so other clients' I/O
 * goes on in between.
 */
const SEEKS_PER_TURN = 64;
/** Size of each write when zeroes must be written as data. */
const ZERO_CHUNK = 1 << 20;
const PUNCH_HOLE = FallocateMode.PUNCH_HOLE | FallocateMode.KEEP_SIZE;
const ZERO_RANGE = FallocateMode.ZERO_RANGE | FallocateMode.KEEP_SIZE;

/** A raw image file (or block device) as a block node. */
export class FileNode extends CheckedNode implements PermissionHolder {
  /** The path the node was opened with. */
  readonly path: string;
  /** A protocol node: no children. */
  readonly children: readonly NodeChild[] = [];
  /** Derived from the options and from whether libc is available. */
  readonly capabilities: NodeCapabilities;
  /** The probed O_DIRECT alignment when opened `direct`, else 1. */
  readonly requestAlignment: number;
  readonly #io: FileIo;
  /** Flush and FUA really sync (false with noFlush). */
  readonly #flushes: boolean;
  readonly #discard: DiscardMode;
  readonly #imageLock: ImageLock | undefined;
  /** Everyone using the node, with what each took; the image's locks are their sum. */
  readonly #users = new Set<{ readonly request: PermissionRequest }>();
  #size: number;
  /** Ranges SEEK_HOLE said were data, so reads need not ask again. */
  readonly #knownData = new KnownData();
  #zeroes?: Uint8Array;
  #closing?: Promise<void>;

  private constructor(path: string, opened: OpenedFile, options: Required<FileNodeOptions>) {
    super({ growable: options.growable });
    this.path = path;
    this.#size = opened.size;
    this.requestAlignment = opened.alignment;
    this.#io = opened.io;
    this.#imageLock = opened.imageLock;
    this.#flushes = !options.noFlush;
    this.#discard = options.discard;
    this.capabilities = {
      writable: !options.readOnly,
      trim: opened.native && options.discard === "unmap",
      fastZero: opened.native,
      cache: opened.native && !options.direct,
      multiConn: true,
      blockStatus: opened.native,
    };
  }

  /**
   * Open `path` (a regular file or a device), taking no lock yet (users
   * do, with `takePermissions`). Throws kind "not-found", "read-only" (no
   * permission), "invalid" (bad options, no O_DIRECT support when `direct`,
   * or a path that is no image: see {@linkcode checkImagePath}) or "not-supported"
   * (writable and locked, but no FFI to take the lock with). Without FFI a
   * read-only node has no lock and no hole detection.
   */
  static async open(path: string, options: FileNodeOptions = {}): Promise<FileNode> {
    const settled = settleOptions(options);
    await checkImagePath(path);
    const libc = loadLibc();
    if (!libc && settled.lock && !settled.readOnly) {
      throw new DenbdError(
        "not-supported",
        `'${path}' cannot be locked against other writers without FFI (--allow-ffi); ` +
          "refusing to open it writable unlocked",
      );
    }
    const opened = libc
      ? await openWithLibc(libc, path, settled)
      : await PortableIo.open(path, settled.readOnly);
    return new FileNode(path, opened, settled);
  }

  /**
   * Take `request` as one more user of the file: the image's lock bytes
   * become those of every user together. Throws kind "busy" with QEMU's
   * message when another process's locks conflict (the locks stay as they
   * were), kind "read-only" when a read-only node is asked for write or
   * resize. Users of one node never conflict with each other.
   */
  takePermissions(request: PermissionRequest): PermissionGrant {
    if (!this.capabilities.writable && request.take.some((p) => p === "write" || p === "resize")) {
      throw new DenbdError("read-only", "Block node is read-only");
    }
    const user = { request };
    this.#lockFor([...this.#users, user]);
    this.#users.add(user);
    return {
      release: () => {
        if (this.#users.delete(user) && !this.#closing) this.#lockFor([...this.#users]);
      },
    };
  }

  /** Size in bytes: as it was at open time, grown by writes past the end when growable. */
  get size(): number {
    return this.#size;
  }

  /** Fill `into` with the bytes at `offset`; a file that shrank gives kind "io". */
  protected driverRead(offset: number, into: Uint8Array): Promise<void> {
    return this.#io.read(offset, into);
  }

  /** Read from the page cache at once, when the bytes are all there. */
  protected override driverReadNow(offset: number, into: Uint8Array): boolean {
    return this.#io.readNow(offset, into);
  }

  /** Write into the page cache at once (see {@linkcode LibcIo}), unless FUA must sync. */
  protected override driverWriteNow(
    offset: number,
    data: Uint8Array,
    options: WriteOptions,
  ): boolean {
    return !(options.fua && this.#flushes) && this.#io.writeNow(offset, data);
  }

  /**
   * Data when remembered as such, else after one SEEK_HOLE on the calling
   * thread while this turn's lseek budget lasts; all data where the file
   * system cannot tell holes.
   */
  protected override driverHoldsDataNow(offset: number, length: number): boolean {
    const end = offset + length;
    if (this.#knownData.endOfDataAt(offset) >= end) return true;
    if (!this.capabilities.blockStatus) return true;
    if (!takeSeekNow()) return false;
    const hole = this.#nextHole(offset);
    if (hole === undefined) return true;
    return hole >= end;
  }

  /**
   * Where the next hole at or after `offset` starts (SEEK_HOLE), remembering
   * the data before it; undefined when the file system cannot tell.
   */
  #nextHole(offset: number): number | undefined {
    const hole = this.#io.seek(offset, Whence.HOLE);
    if (hole !== undefined) this.#knownData.add(offset, hole);
    return hole;
  }

  /** Store `data` at `offset`, durably first when `fua` asks (unless noFlush). */
  protected async driverWrite(
    offset: number,
    data: Uint8Array,
    options: WriteOptions,
  ): Promise<void> {
    await this.#io.write(offset, data);
    this.#size = Math.max(this.#size, offset + data.length);
    await this.#syncIf(options.fua);
  }

  /**
   * Zero a range: punch it when `mayTrim` (whatever the discard mode, as
   * QEMU's file driver does for a request made on it), else
   * fallocate ZERO_RANGE; where the file system has neither, write zeroes
   * (or fail with kind "not-supported" when `fast`). A range past the end
   * (growable nodes only) is allocated as zeroes and the file grows.
   */
  protected async driverWriteZeroes(
    offset: number,
    length: number,
    options: ZeroOptions,
  ): Promise<void> {
    if (length === 0) return;
    const end = offset + length;
    const grows = end > this.#size;
    this.#knownData.forget(offset, length);
    const zeroed = await this.#zeroWithoutWriting(offset, length, options.mayTrim && !grows, grows);
    // A block status that ran meanwhile may have seen the range before it changed.
    this.#knownData.forget(offset, length);
    if (!zeroed) {
      if (options.fast) {
        throw new DenbdError("not-supported", "write zeroes: the file system cannot zero fast");
      }
      await this.#writeZeroBuffers(offset, length);
    }
    this.#size = Math.max(this.#size, end);
    await this.#syncIf(options.fua);
  }

  /** Punch a hole with discard "unmap" (where the file system can); nothing with "ignore". */
  protected async driverTrim(offset: number, length: number, options: WriteOptions) {
    if (this.#discard !== "unmap" || length === 0) return;
    this.#knownData.forget(offset, length);
    if (await this.#io.allocate(PUNCH_HOLE, offset, length)) {
      this.#knownData.forget(offset, length);
      await this.#syncIf(options.fua);
    }
  }

  /** fdatasync, except with noFlush. */
  async flush(): Promise<void> {
    if (this.#flushes) await this.#io.syncData();
  }

  /** Ask the kernel to read the range ahead (no effect with O_DIRECT or without libc). */
  protected driverCache(offset: number, length: number): Promise<void> {
    return this.#io.prefetch(offset, length);
  }

  /**
   * Holes (zero, unallocated) and data from SEEK_HOLE/SEEK_DATA, at most
   * {@linkcode MAX_EXTENTS} of them; everything is data where the file
   * system cannot tell. Data already known ({@linkcode KnownData}) needs no
   * lseek. At most {@linkcode SEEKS_PER_TURN} lseek calls run per turn of
   * the event loop (across all file nodes), so a long scan never holds up
   * other work.
   */
  protected async driverBlockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    const end = offset + length;
    const extents: BlockExtent[] = [];
    let position = offset;
    while (position < end && extents.length < MAX_EXTENTS) {
      let hole = this.#knownData.endOfDataAt(position);
      if (hole < 0) {
        await seekTurn();
        hole = this.#nextHole(position) ?? -1;
        if (hole < 0) break;
      }
      const data = hole > position;
      if (!data) await seekTurn();
      const next = data ? hole : this.#io.seek(position, Whence.DATA);
      if (next === undefined || next <= position) break;
      const stop = Math.min(next, end);
      const last = extents.at(-1);
      if (last?.data === data) {
        extents[extents.length - 1] = { ...last, length: last.length + stop - position };
      } else extents.push({ length: stop - position, data, zero: !data, allocated: true });
      position = stop;
    }
    if (extents.length === 0) extents.push({ length, data: true, zero: false, allocated: true });
    return extents;
  }

  /** Wait for requests in flight, then close the file (releasing its image locks). */
  close(): Promise<void> {
    this.#closing ??= this.#io.close();
    return this.#closing;
  }

  #lockFor(users: readonly { readonly request: PermissionRequest }[]): void {
    this.#imageLock?.set(lockRequestOf(users.map((user) => user.request)));
  }

  /** Changes to a read-only file name it. */
  protected override readOnlyError(): DenbdError {
    return new DenbdError("read-only", `'${this.path}' is opened read-only`);
  }

  /** Make a change durable when the request asked for FUA. */
  async #syncIf(fua: boolean | undefined): Promise<void> {
    if (fua && this.#flushes) await this.#io.syncData();
  }

  /** Punch (when `mayTrim`) or zero the range with fallocate; false when the file system cannot. */
  async #zeroWithoutWriting(
    offset: number,
    length: number,
    mayTrim: boolean | undefined,
    grows: boolean,
  ): Promise<boolean> {
    if (mayTrim && await this.#io.allocate(PUNCH_HOLE, offset, length)) return true;
    return await this.#io.allocate(grows ? FallocateMode.ZERO_RANGE : ZERO_RANGE, offset, length);
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

/** lseek calls left in this turn of the event loop. */
let seeksLeft = SEEKS_PER_TURN;
/** Resolves at the next turn, once the lseek budget is spent. */
let nextTurn: Promise<void> | null = null;

/** Take one lseek call from this turn's budget without waiting: false when it is spent. */
function takeSeekNow(): boolean {
  if (seeksLeft === 0) return false;
  seeksLeft--;
  return true;
}

/** Take one lseek call from this turn's budget, waiting for the next turn when it is spent. */
async function seekTurn(): Promise<void> {
  while (seeksLeft === 0) {
    // setImmediate runs after the loop has polled I/O, and without the
    // millisecond clamp of setTimeout.
    nextTurn ??= new Promise((resolve) =>
      setImmediate(() => {
        seeksLeft = SEEKS_PER_TURN;
        nextTurn = null;
        resolve();
      })
    );
    await nextTurn;
  }
  seeksLeft--;
}

/**
 * Refuse, naming the path, what cannot be an image before opening it: a
 * missing path (kind "not-found", QEMU's "Could not open" message), and a
 * directory, FIFO or socket (kind "invalid", QEMU's "'file' driver requires"
 * message). Opening a FIFO would block until a writer appears.
 */
export async function checkImagePath(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (error) {
    const kind = error instanceof Deno.errors.NotFound
      ? "not-found"
      : error instanceof Deno.errors.PermissionDenied
      ? "read-only"
      : "io";
    throw new DenbdError(kind, `Could not open '${path}': ${osErrorText(error)}`);
  }
  if (info.isDirectory || info.isFifo || info.isSocket) {
    throw new DenbdError("invalid", `'file' driver requires '${path}' to be a regular file`);
  }
}

function settleOptions(options: FileNodeOptions): Required<FileNodeOptions> {
  const settled = {
    readOnly: options.readOnly ?? false,
    direct: options.direct ?? false,
    noFlush: options.noFlush ?? false,
    discard: options.discard ?? "ignore",
    lock: options.lock ?? true,
    growable: options.growable ?? false,
  };
  if (!DISCARD_MODES.includes(settled.discard)) {
    throw new DenbdError("invalid", `invalid discard mode '${settled.discard}'`);
  }
  return settled;
}

async function openWithLibc(
  libc: Libc,
  path: string,
  options: Required<FileNodeOptions>,
): Promise<OpenedFile> {
  const flags = (options.readOnly ? OpenFlag.READ_ONLY : OpenFlag.READ_WRITE) |
    OpenFlag.CLOSE_ON_EXEC;
  const fd = openFd(libc, path, flags | (options.direct ? OpenFlag.DIRECT : 0));
  const imageLock = options.lock ? new ImageLock(fd, path) : undefined;
  try {
    const size = libc.lseek(fd, 0, Whence.END);
    if (size < 0) throw errnoError("lseek", -size);
    if (!options.direct) {
      return { io: new LibcIo(libc, fd, true), size, alignment: 1, native: true, imageLock };
    }
    const alignment = await probeDirectAlignment(libc, fd);
    const direct = new LibcIo(libc, fd, false);
    // The last, partial block cannot be written with O_DIRECT without growing
    // the file, so it (and anything past the end) goes through a buffered
    // descriptor of its own.
    const tail = new LibcIo(libc, openFd(libc, path, flags), true);
    const tailStart = alignDown(size, alignment);
    const io = new DirectIo(direct, tail, alignment, tailStart);
    return { io, size, alignment, native: true, imageLock };
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
