/**
 * What a file node needs from the file underneath: positional reads and
 * writes, fallocate, fdatasync, prefetch and hole seeking. Each way of
 * reaching a file (libc, O_DIRECT through libc, Deno's portable file API)
 * implements {@linkcode FileIo}.
 *
 * @module
 */

import { DenbdError } from "../errors.ts";
import type { ImageLock } from "./image-lock.ts";

/** The primitive operations FileNode builds on, one implementation per way of reaching the file. */
export interface FileIo {
  /** Fill `into` from `offset`; reaching the end of the file first is kind "io". */
  read(offset: number, into: Uint8Array): Promise<void>;
  /**
   * Fill `into` from `offset` on the calling thread when that is cheap (the
   * bytes are in the page cache): true when done, false when {@linkcode FileIo.read}
   * must do it (never throws).
   */
  readNow(offset: number, into: Uint8Array): boolean;
  /** Store all of `data` at `offset`. */
  write(offset: number, data: Uint8Array): Promise<void>;
  /**
   * Store all of `data` at `offset` on the calling thread when that is cheap
   * (whole pages into the page cache): true when done, false when
   * {@linkcode FileIo.write} must do it (never throws).
   */
  writeNow(offset: number, data: Uint8Array): boolean;
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
export interface OpenedFile {
  /** The I/O on the opened file. */
  readonly io: FileIo;
  /** The file's size when it was opened. */
  readonly size: number;
  /** The request alignment the I/O needs for efficiency (1: any). */
  readonly alignment: number;
  /** Reached through libc (holes, fallocate, fadvise work). */
  readonly native: boolean;
  /** The image's lock bytes, when the file is locked (libc, `lock` option). */
  readonly imageLock?: ImageLock;
}

/** The error of a read that met the end of the file before filling its buffer. */
export function endOfFile(offset: number): DenbdError {
  return new DenbdError("io", `read: unexpected end of file at offset ${offset} (file shrank?)`);
}
