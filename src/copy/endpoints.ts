/**
 * Opening the two ends of a copy by the names a user gives: an NBD export
 * (by URI), a local file or block device, or a stream (standard input or
 * output, a pipe, a character device), each behind the
 * {@linkcode Source} and {@linkcode Destination} interfaces of
 * `endpoint.ts`.
 *
 * How a name is read follows nbdcopy: `-` is the standard stream, a name
 * starting with an NBD URI scheme is an export, `null:` as the destination
 * throws the data away, anything else is a local path. An end may also be
 * a command (nbdcopy's `[ CMD ARGS ... ]`): an NBD server run as a
 * subprocess through socket activation.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { openDestination, openSource } from "./endpoints.ts";
 * const path = await Deno.makeTempFile();
 * await Deno.truncate(path, 65536);
 * // Names may also be NBD URIs ("nbd://localhost/disk") or "-" for a stream.
 * const source = await openSource(path, { connections: 4, writeBehind: false });
 * const destination = await openDestination(`${path}.copy`, {
 *   connections: 4,
 *   writeBehind: false,
 *   sourceSize: source.size,
 * });
 * try {
 *   assert.equal(source.size, 65536);
 *   assert.equal(destination.startsZeroed, true); // a new file starts as one hole
 * } finally {
 *   await source.close();
 *   await destination.close();
 *   await Deno.remove(path);
 *   await Deno.remove(`${path}.copy`);
 * }
 * ```
 * @module
 */

import { DenbdError, kindOf, messageOf } from "../errors.ts";
import { openFileDestination, openFileSource } from "./file-endpoint.ts";
import { NbdEndpoint, type NbdOpenOptions } from "./nbd-endpoint.ts";
import type { Destination, Source } from "./endpoint.ts";
import { StreamDestination, StreamSource } from "./stream-endpoint.ts";
import { NullDestination } from "./null-endpoint.ts";
import type { ServerCommand } from "../nbd/client/subprocess.ts";

/** How ends are opened (only NBD ends have choices). */
export type OpenOptions = NbdOpenOptions;

/** One end of a copy as the user names it: a URI, a path, "-", "null:", or a subprocess. */
export type CopyEnd = string | ServerCommand;

/** The name that means standard input (as a source) or standard output (as a destination). */
const STANDARD_STREAM = "-";

/** The destination that discards what it is given (nbdcopy's `null:`; as a source it is a path). */
const NULL_DESTINATION = "null:";

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
export function openSource(end: CopyEnd, options: OpenOptions): Promise<Source> {
  if (typeof end !== "string") return openSubprocess(end, "source", options);
  const name = end;
  return named(name, async () => {
    if (name === STANDARD_STREAM) {
      const path = STANDARD_STREAM_PATHS.input;
      return await isFileOrDevice(path)
        ? await openFileSource(path, name)
        : new StreamSource(name, Deno.stdin);
    }
    if (NBD_URI_PREFIX.test(name)) return NbdEndpoint.open(name, "source", options);
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
  end: CopyEnd,
  options: OpenOptions & { readonly sourceSize: number | undefined },
): Promise<Destination> {
  if (typeof end !== "string") return openSubprocess(end, "destination", options);
  const name = end;
  return named(name, async () => {
    if (name === NULL_DESTINATION) return new NullDestination(name, options.sourceSize);
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
      return NbdEndpoint.open(name, "destination", options);
    }
    return openFileDestination(name, options.sourceSize);
  });
}

/** Run `end`'s command as an NBD server and connect to it; errors are prefixed with the program. */
function openSubprocess(
  end: ServerCommand,
  role: "source" | "destination",
  options: OpenOptions,
): Promise<NbdEndpoint> {
  return named(end.command[0], () => NbdEndpoint.openSubprocess(end.command, role, options));
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
