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
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { lockImage, WRITABLE_IMAGE } from "./image-lock.ts";
 * import { loadLibc, OpenFlag } from "./libc.ts";
 * const path = await Deno.makeTempFile();
 * const libc = loadLibc()!;
 * const first = libc.open(path, OpenFlag.READ_WRITE | OpenFlag.CLOSE_ON_EXEC);
 * const second = libc.open(path, OpenFlag.READ_WRITE | OpenFlag.CLOSE_ON_EXEC);
 * try {
 *   lockImage(first, path, WRITABLE_IMAGE);
 *   // A second writer of the same image is refused, as QEMU refuses it.
 *   assert.throws(() => lockImage(second, path, WRITABLE_IMAGE), /Failed to get "write" lock/);
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

/** denbd's writable image: reads and writes, and allows no other writer or resizer. */
export const WRITABLE_IMAGE: ImageLockRequest = {
  holds: ["consistent read", "write"],
  unshares: ["write", "resize"],
};

/** denbd's read-only image, like `qemu-nbd -r`: reads, and allows no resizer. */
export const READ_ONLY_IMAGE: ImageLockRequest = {
  holds: ["consistent read"],
  unshares: ["resize"],
};

/** Bit number of each permission; its lock bytes are 100 + bit and 200 + bit. */
const PERMISSION_BITS: Record<ImagePermission, number> = {
  "consistent read": 0,
  "write": 1,
  "write unchanged": 2,
  "resize": 3,
};

const HOLD_BYTES = 100;
const UNSHARE_BYTES = 200;
/** Length of the range from HOLD_BYTES covering every lock byte (100 of each kind). */
const LOCK_BYTES_LENGTH = 200;

/**
 * Lock the image open as `fd` for `request`, or throw kind "busy" when
 * another open of the image conflicts. The message is QEMU's two lines: the
 * error (`Failed to get "write" lock`, `Failed to get shared "write" lock`)
 * and the hint (`Is another process using the image [PATH]?`). On failure no
 * lock byte stays taken. `path` only names the image in messages.
 */
export function lockImage(fd: number, path: string, request: ImageLockRequest): void {
  const libc = requireLibc();
  try {
    takeLockBytes(libc, fd, path, request);
    checkConflicts(libc, fd, path, request);
  } catch (error) {
    // Best effort: the caller closes fd after a failure, which drops the bytes anyway.
    libc.fcntlLock(
      fd,
      LockCommand.SET,
      encodeFlock(LockType.UNLOCK, HOLD_BYTES, LOCK_BYTES_LENGTH),
    );
    throw error;
  }
}

function requireLibc(): Libc {
  const libc = loadLibc();
  if (!libc) throw new DenbdError("not-supported", "image locking needs FFI (--allow-ffi)");
  return libc;
}

function takeLockBytes(libc: Libc, fd: number, path: string, request: ImageLockRequest): void {
  const bytes = [
    ...request.holds.map((permission) => HOLD_BYTES + PERMISSION_BITS[permission]),
    ...request.unshares.map((permission) => UNSHARE_BYTES + PERMISSION_BITS[permission]),
  ];
  for (const byte of bytes) {
    const result = libc.fcntlLock(fd, LockCommand.SET, encodeFlock(LockType.READ, byte, 1));
    if (result < 0) throw lockError(`Failed to lock byte ${byte}`, path, result);
  }
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
