/**
 * Local files and block devices as ends of a copy, through the block
 * layer's {@linkcode FileNode}: holes found with SEEK_DATA/SEEK_HOLE, zeroes
 * punched rather than written. Anything else with a path (a pipe, a
 * character device such as /dev/null) is a stream, as nbdcopy treats it.
 *
 * A destination regular file is created (mode 0644) when missing, then
 * truncated to nothing and extended to the source's size: it starts as one
 * hole, reads as zeroes, and zero ranges of the source cost nothing. When
 * the source's size is unknown (a stream), the file is truncated and
 * written as a stream instead.
 * Writes are made durable behind the copy (see {@linkcode WriteBehind}).
 *
 * @module
 */

import { FileNode } from "../block/file.ts";
import { DenbdError, osErrorText } from "../errors.ts";
import type { Destination, Source } from "./endpoint.ts";
import type { Extent } from "./plan.ts";
import { StreamDestination, StreamSource } from "./stream-endpoint.ts";
import { WriteBehind } from "./write-behind.ts";

/** A regular file or block device opened as a block node. */
export class FileEndpoint implements Source, Destination {
  /** The path the user gave. */
  readonly name: string;
  /** A file or block device. */
  readonly kind = "file";
  /** Whether the file was made for this copy (created or truncated). */
  readonly startsZeroed: boolean;
  /** Never: positional I/O at any offset. */
  readonly sequential = false;
  /** Unbounded: requests need no connection. */
  readonly connections = Infinity;
  /** Unbounded: any length is one call. */
  readonly maxRequest = Infinity;
  readonly #node: FileNode;
  readonly #writeBehind: WriteBehind;

  /** Wrap an open node; `startsZeroed` when the file was just truncated. */
  constructor(name: string, node: FileNode, startsZeroed: boolean) {
    this.name = name;
    this.#node = node;
    this.startsZeroed = startsZeroed;
    this.#writeBehind = new WriteBehind(() => node.flush());
  }

  /** Size of the file or device. */
  get size(): number {
    return this.#node.size;
  }

  /** Holes and data from SEEK_HOLE/SEEK_DATA (all data where the file system cannot tell). */
  async extents(offset: number, length: number): Promise<Extent[]> {
    const extents: Extent[] = [];
    let position = offset;
    for (const extent of await this.#node.blockStatus(offset, length)) {
      extents.push({ offset: position, length: extent.length, zero: extent.zero });
      position += extent.length;
    }
    return extents;
  }

  /** Fill `into` from `offset`; always all of it (a file that shrank is an error). */
  async read(offset: number, into: Uint8Array): Promise<number> {
    await this.#node.read(offset, into);
    return into.length;
  }

  /** Write `data` at `offset` (made durable behind the copy). */
  async write(offset: number, data: Uint8Array): Promise<void> {
    await this.#node.write(offset, data);
    this.#writeBehind.written(data.length);
  }

  /**
   * Punch a hole (or zero the range where punching is not possible); with
   * `allocate`, zero it allocated (FALLOC_FL_ZERO_RANGE, or zeroes written).
   */
  zero(offset: number, length: number, allocate: boolean): Promise<void> {
    return this.#node.writeZeroes(offset, length, { mayTrim: !allocate });
  }

  /** fdatasync, after any background flush (whose failure is reported here). */
  async flush(): Promise<void> {
    await this.#writeBehind.settle();
    await this.#node.flush();
  }

  /** Close the file (after any background flush). */
  async close(): Promise<void> {
    await this.#writeBehind.settle().catch(() => {});
    await this.#node.close();
  }
}

/**
 * Open `path` to be read: a block node for files and devices, a stream
 * otherwise; `name` is what messages call it.
 */
export async function openFileSource(path: string, name = path): Promise<Source> {
  const info = await statOrThrow(path);
  if (info.isDirectory) throw new DenbdError("invalid", "is a directory");
  if (info.isFile || info.isBlockDevice) {
    const node = await FileNode.open(path, { readOnly: true, lock: false });
    return new FileEndpoint(name, node, false);
  }
  return new StreamSource(name, await openOrThrow(path, { read: true }));
}

/**
 * Open `path` to be written for a source of `sourceSize` bytes: a regular
 * file is created when missing and fitted to the source (see the module
 * documentation), a block device is used as it is, anything else is a
 * stream; `name` is what messages call it.
 */
export async function openFileDestination(
  path: string,
  sourceSize: number | undefined,
  name = path,
): Promise<Destination> {
  const info = await statOrThrow(path).catch(async (error) => {
    if (!(error instanceof DenbdError && error.kind === "not-found")) throw error;
    (await openOrThrow(path, { write: true, createNew: true, mode: 0o644 })).close();
    return await statOrThrow(path);
  });
  if (info.isDirectory) throw new DenbdError("invalid", "is a directory");
  if (info.isFile) {
    const file = await openOrThrow(path, { write: true });
    try {
      await file.truncate(0);
      if (sourceSize === undefined) return new StreamDestination(name, file);
      await file.truncate(sourceSize);
    } catch (error) {
      file.close();
      throw osError(error);
    }
    file.close();
  }
  if (info.isFile || info.isBlockDevice) {
    const node = await FileNode.open(path, { discard: "unmap", lock: false });
    return new FileEndpoint(name, node, info.isFile);
  }
  // A pipe or a character device: written in order, never synced (fdatasync fails on them).
  const stream = await openOrThrow(path, { write: true });
  return new StreamDestination(name, {
    write: (data) => stream.write(data),
    close: () => stream.close(),
  });
}

async function statOrThrow(path: string): Promise<Deno.FileInfo> {
  try {
    return await Deno.stat(path);
  } catch (error) {
    throw osError(error);
  }
}

async function openOrThrow(path: string, options: Deno.OpenOptions): Promise<Deno.FsFile> {
  try {
    return await Deno.open(path, options);
  } catch (error) {
    throw osError(error);
  }
}

/** Deno's error for a file operation as a DenbdError: the OS's text, a kind from its class. */
function osError(error: unknown): DenbdError {
  if (error instanceof DenbdError) return error;
  const kind = error instanceof Deno.errors.NotFound ? "not-found" : "io";
  return new DenbdError(kind, osErrorText(error), { cause: error });
}
