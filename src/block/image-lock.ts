/**
 * Image locking that QEMU's tools understand, so that denbd, qemu-nbd,
 * qemu-io and qemu-img see each other's use of an image.
 *
 * The scheme (QEMU 7.2, file-posix): each block-layer permission has a bit
 * number. A user of the image takes a shared open-file-description lock on
 * byte 100 + bit for every permission it holds and on byte 200 + bit for
 * every permission it refuses to share. Another user conflicts when it wants
 * a permission whose "unshare" byte (200 + bit) is locked by someone else, or
 * refuses to share a permission whose "hold" byte (100 + bit) is locked by
 * someone else. The locks belong to the open file description, so closing
 * the descriptor releases them.
 *
 * The bytes are taken first and the conflicts checked after: two users that
 * open the image at the same moment then both see each other and both fail,
 * instead of both checking an empty image and both succeeding.
 *
 * Which bytes a file holds follows its users (`permissions.ts`): an
 * {@linkcode ImageLock} is changed to the sum of its users' requests each
 * time one comes or goes.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ImageLock } from "./image-lock.ts";
 * import { loadLibc, OpenFlag } from "./libc.ts";
 * const path = await Deno.makeTempFile();
 * const libc = loadLibc()!;
 * const first = libc.open(path, OpenFlag.READ_WRITE | OpenFlag.CLOSE_ON_EXEC);
 * const second = libc.open(path, OpenFlag.READ_WRITE | OpenFlag.CLOSE_ON_EXEC);
 * const writer = { holds: ["consistent read", "write"], unshares: ["write", "resize"] } as const;
 * try {
 *   new ImageLock(first, path).set(writer);
 *   // A second writer of the same image is refused, as QEMU refuses it.
 *   assert.throws(() => new ImageLock(second, path).set(writer), /Failed to get "write" lock/);
 * } finally {
 *   libc.close(first);
 *   libc.close(second);
 *   await Deno.remove(path);
 * }
 * ```
 * @module
 */

import { DenbdError } from "../errors.ts";
import { encodeFlock, errnoError, type Libc, loadLibc, LockCommand, LockType } from "./libc.ts";

/** A block-layer permission, named as QEMU names it in its messages. */
export type ImagePermission = "consistent read" | "write" | "write unchanged" | "resize";

/** What a user of an image holds and what it refuses to share with others. */
export interface ImageLockRequest {
  /** Permissions this user has. */
  readonly holds: readonly ImagePermission[];
  /** Permissions nobody else may have while this user has the image. */
  readonly unshares: readonly ImagePermission[];
}

/** Bit number of each permission; its lock bytes are 100 + bit and 200 + bit. */
const PERMISSION_BITS: Record<ImagePermission, number> = {
  "consistent read": 0,
  "write": 1,
  "write unchanged": 2,
  "resize": 3,
};

const HOLD_BYTES = 100;
const UNSHARE_BYTES = 200;

/**
 * The lock bytes one open file description holds on an image, changed as a
 * whole: {@linkcode ImageLock.set} takes the bytes of the new request,
 * checks it against everyone else's, and only then drops the bytes no
 * longer needed, so a refused change leaves the previous locks as they were.
 */
export class ImageLock {
  readonly #fd: number;
  readonly #path: string;
  #held: readonly number[] = [];

  /** The locks of the image open as `fd`; `path` only names the image in messages. */
  constructor(fd: number, path: string) {
    this.#fd = fd;
    this.#path = path;
  }

  /**
   * Hold exactly the bytes of `request`, or throw kind "busy" when another
   * open of the image conflicts. The message is QEMU's two lines: the error
   * (`Failed to get "write" lock`, `Failed to get shared "write" lock`) and
   * the hint (`Is another process using the image [PATH]?`).
   */
  set(request: ImageLockRequest): void {
    const libc = requireLibc();
    const wanted = lockBytesOf(request);
    try {
      for (const byte of wanted) {
        const result = libc.fcntlLock(
          this.#fd,
          LockCommand.SET,
          encodeFlock(LockType.READ, byte, 1),
        );
        if (result < 0) throw lockError(`Failed to lock byte ${byte}`, this.#path, result);
      }
      checkConflicts(libc, this.#fd, this.#path, request);
    } catch (error) {
      // Best effort: a descriptor that is closed after a failure drops its bytes anyway.
      unlock(libc, this.#fd, wanted.filter((byte) => !this.#held.includes(byte)));
      throw error;
    }
    unlock(libc, this.#fd, this.#held.filter((byte) => !wanted.includes(byte)));
    this.#held = wanted;
  }
}

function lockBytesOf(request: ImageLockRequest): number[] {
  return [
    ...request.holds.map((permission) => HOLD_BYTES + PERMISSION_BITS[permission]),
    ...request.unshares.map((permission) => UNSHARE_BYTES + PERMISSION_BITS[permission]),
  ];
}

function unlock(libc: Libc, fd: number, bytes: readonly number[]): void {
  for (const byte of bytes) {
    libc.fcntlLock(fd, LockCommand.SET, encodeFlock(LockType.UNLOCK, byte, 1));
  }
}

function requireLibc(): Libc {
  const libc = loadLibc();
  if (!libc) throw new DenbdError("not-supported", "image locking needs FFI (--allow-ffi)");
  return libc;
}

function checkConflicts(libc: Libc, fd: number, path: string, request: ImageLockRequest): void {
  for (const permission of request.holds) {
    if (isLockedByOthers(libc, fd, UNSHARE_BYTES + PERMISSION_BITS[permission])) {
      throw busy(`Failed to get "${permission}" lock`, path);
    }
  }
  for (const permission of request.unshares) {
    if (isLockedByOthers(libc, fd, HOLD_BYTES + PERMISSION_BITS[permission])) {
      throw busy(`Failed to get shared "${permission}" lock`, path);
    }
  }
}

/** Whether another open file description holds any lock on `byte`. */
function isLockedByOthers(libc: Libc, fd: number, byte: number): boolean {
  const probe = encodeFlock(LockType.WRITE, byte, 1);
  const result = libc.fcntlLock(fd, LockCommand.GET, probe);
  if (result < 0) throw errnoError(`fcntl(F_OFD_GETLK) on byte ${byte}`, -result);
  return new DataView(probe.buffer).getInt16(0, true) !== LockType.UNLOCK;
}

/** QEMU's two-line message: the error, then the hint naming the image. */
function busy(reason: string, path: string): DenbdError {
  return new DenbdError("busy", `${reason}\nIs another process using the image [${path}]?`);
}

function lockError(reason: string, path: string, result: number): DenbdError {
  const cause = errnoError("fcntl(F_OFD_SETLK)", -result);
  return cause.kind === "busy" ? busy(reason, path) : cause;
}
