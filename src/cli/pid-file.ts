/**
 * The pid file of a server, as QEMU writes it (--pid-file, --pidfile):
 * created with mode 0600, locked for as long as the server runs so that a
 * second server given the same file is refused, and holding "PID\n".
 *
 * @module
 */

import { DenbdError, osErrorText } from "../errors.ts";
import {
  encodeFlock,
  type Libc,
  loadLibc,
  LockCommand,
  LockType,
  OpenFlag,
} from "../block/libc.ts";

/** A written and locked pid file. */
export interface PidFile {
  /** Drop the lock (closing the file); with `remove`, delete the file first. */
  release(remove: boolean): void;
}

/**
 * Write this process's id to `path` and lock it. Throws QEMU's messages:
 * "cannot create PID file: Could not create 'PATH': REASON" and
 * "cannot create PID file: Cannot lock pid file: REASON".
 */
export async function writePidFile(path: string): Promise<PidFile> {
  const libc = loadLibc();
  if (!libc) return await writeUnlocked(path);
  const fd = libc.open(path, OpenFlag.WRITE_ONLY | OpenFlag.CREATE | OpenFlag.CLOSE_ON_EXEC, 0o600);
  if (fd < 0) throw pidFileError(`Could not create '${path}': ${libc.strerror(-fd)}`);
  try {
    const locked = libc.fcntlLock(fd, LockCommand.SET, encodeFlock(LockType.WRITE, 0, 0));
    if (locked < 0) throw pidFileError(`Cannot lock pid file: ${libc.strerror(-locked)}`);
    const truncated = libc.ftruncate(fd, 0);
    if (truncated < 0) {
      throw pidFileError(`Failed to truncate pid file: ${libc.strerror(-truncated)}`);
    }
    const text = new TextEncoder().encode(`${Deno.pid}\n`);
    const written = await libc.pwrite(fd, text, 0);
    if (written !== text.length) throw pidFileError("Failed to write pid file");
  } catch (error) {
    libc.close(fd);
    throw error;
  }
  return lockedPidFile(libc, fd, path);
}

function lockedPidFile(libc: Libc, fd: number, path: string): PidFile {
  return {
    release(remove) {
      if (remove) Deno.removeSync(path);
      libc.close(fd);
    },
  };
}

/** Without libc (no --allow-ffi), the file is written but cannot be locked. */
async function writeUnlocked(path: string): Promise<PidFile> {
  try {
    await Deno.writeTextFile(path, `${Deno.pid}\n`, { mode: 0o600 });
  } catch (error) {
    throw pidFileError(`Could not create '${path}': ${osErrorText(error)}`);
  }
  return { release: (remove) => remove && Deno.removeSync(path) };
}

function pidFileError(reason: string): DenbdError {
  return new DenbdError("io", `cannot create PID file: ${reason}`);
}
