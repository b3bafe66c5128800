/**
 * The two ends of a copy behind one pair of interfaces, whatever they are:
 * an NBD export (by URI), a local file or block device, or a stream
 * (standard input or output, a pipe, a character device). The copy engine
 * only ever talks to a {@linkcode Source} and a {@linkcode Destination}.
 *
 * How a name is read follows nbdcopy: `-` is the standard stream, a name
 * starting with an NBD URI scheme is an export, anything else a local path.
 *
 * @example
 * ```ts
 * import { openDestination, openSource } from "./endpoints.ts";
 * const source = await openSource("nbd://localhost/disk", { connections: 4 });
 * const destination = await openDestination("disk.img", {
 *   connections: 4,
 *   sourceSize: source.size,
 * });
 * ```
 * @module
 */

import { DenbdError, kindOf, messageOf } from "../errors.ts";
import { openFileDestination, openFileSource } from "./file-endpoint.ts";
import { NbdEndpoint } from "./nbd-endpoint.ts";
import type { Extent } from "./plan.ts";
import { StreamDestination, StreamSource } from "./stream-endpoint.ts";

/** What every end of a copy tells about itself. */
export interface Endpoint {
  /** The name the user gave (a URI, a path or "-"), for messages. */
  readonly name: string;
  /** Size in bytes; undefined for a stream, whose end is known only when it comes. */
  readonly size: number | undefined;
  /** Bytes must be transferred in order (a stream); otherwise at any offset, concurrently. */
  readonly sequential: boolean;
  /**
   * Connections requests are spread over (an NBD client's count); Infinity
   * where requests need no connection (files), 1 for streams.
   */
  readonly connections: number;
  /** Largest read or write it takes in one request. */
  readonly maxRequest: number;
  /** Release everything it holds (connections, descriptors). */
  close(): Promise<void>;
}

/** The end that is read. */
export interface Source extends Endpoint {
  /**
   * The runs from `offset`: at least one, in order and without gaps,
   * covering at least one byte; the last may reach past `length`.
   */
  extents(offset: number, length: number): Promise<Extent[]>;
  /**
   * Fill `into` with the bytes at `offset`; resolves to the count read,
   * which is less than `into.length` only at the end of a stream.
   */
  read(offset: number, into: Uint8Array): Promise<number>;
}

/** The end that is written. */
export interface Destination extends Endpoint {
  /**
   * Every byte reads as zero before the copy starts (a regular file created
   * or truncated for it), so zero ranges need no request at all.
   */
  readonly startsZeroed: boolean;
  /** Store `data` at `offset`. */
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Make `length` bytes at `offset` read as zeroes, leaving holes where it can. */
  zero(offset: number, length: number): Promise<void>;
  /** Make everything written durable. */
  flush(): Promise<void>;
}

/** How ends are opened. */
export interface OpenOptions {
  /** Connections to open to an NBD server that allows several. */
  readonly connections: number;
}

/** The name that means standard input (as a source) or standard output (as a destination). */
const STANDARD_STREAM = "-";

/** Names starting like this are NBD URIs (the schemes of the NBD URI standard). */
const NBD_URI_PREFIX = /^nbds?(\+unix|\+vsock)?:/;

/**
 * Where the standard streams' open files can be opened again by path
 * (Linux), so that a redirected regular file is used as a file.
 */
const STANDARD_STREAM_PATHS = { input: "/proc/self/fd/0", output: "/proc/self/fd/1" } as const;

/**
 * Open `name` to be read. Standard input is a stream unless it is a
 * regular file or block device (`< disk.img`), which is then read as a
 * file, holes and all, as nbdcopy does. Errors are prefixed with the name.
 */
export function openSource(name: string, options: OpenOptions): Promise<Source> {
  return named(name, async () => {
    if (name === STANDARD_STREAM) {
      const path = STANDARD_STREAM_PATHS.input;
      return await isFileOrDevice(path)
        ? await openFileSource(path, name)
        : new StreamSource(name, Deno.stdin);
    }
    if (NBD_URI_PREFIX.test(name)) return NbdEndpoint.open(name, "source", options.connections);
    return openFileSource(name);
  });
}

/**
 * Open `name` to be written, for a source of `sourceSize` bytes (undefined
 * for a stream). A regular file is created when missing and truncated to
 * the source's size, so it starts sparse and zeroed, as nbdcopy does; so is
 * standard output redirected to a regular file (`> disk.img`). Errors are
 * prefixed with the name.
 */
export function openDestination(
  name: string,
  options: OpenOptions & { readonly sourceSize: number | undefined },
): Promise<Destination> {
  return named(name, async () => {
    if (name === STANDARD_STREAM) {
      if (Deno.stdout.isTerminal()) {
        throw new DenbdError("invalid", "refusing to write to a terminal");
      }
      const path = STANDARD_STREAM_PATHS.output;
      return await isFileOrDevice(path)
        ? await openFileDestination(path, options.sourceSize, name)
        : new StreamDestination(name, Deno.stdout);
    }
    if (NBD_URI_PREFIX.test(name)) {
      return NbdEndpoint.open(name, "destination", options.connections);
    }
    return openFileDestination(name, options.sourceSize);
  });
}

/** Whether `path` is a regular file or a block device (false when it cannot be told). */
async function isFileOrDevice(path: string): Promise<boolean> {
  try {
    const info = await Deno.stat(path);
    return info.isFile || info.isBlockDevice === true;
  } catch {
    return false;
  }
}

/** Run `open`, prefixing any error's message with `name` (keeping its kind). */
async function named<T>(name: string, open: () => Promise<T>): Promise<T> {
  try {
    return await open();
  } catch (error) {
    throw new DenbdError(kindOf(error), `${name}: ${messageOf(error)}`, { cause: error });
  }
}
