/**
 * Copy between NBD exports, local files, streams and NBD servers run as
 * subprocesses, as libnbd's nbdcopy does: open both ends, check the
 * destination is large enough, move the data (skipping holes, writing zero
 * ranges efficiently), flush the destination when asked and close both
 * ends on every path (stopping subprocesses).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { copy } from "./copy.ts";
 * const source = await Deno.makeTempFile();
 * const destination = `${source}.copy`;
 * await Deno.writeFile(source, new Uint8Array(1 << 20).fill(7));
 * try {
 *   // Names may also be NBD URIs (nbd://localhost/disk) or "-" for a stream.
 *   await copy(source, destination, { connections: 4 });
 *   assert.deepEqual(await Deno.readFile(destination), await Deno.readFile(source));
 * } finally {
 *   await Deno.remove(source);
 *   await Deno.remove(destination).catch(() => {});
 * }
 * ```
 * @module
 */

import { DenbdError, kindOf, messageOf } from "../errors.ts";
import type { Destination, Endpoint, Source } from "./endpoint.ts";
import { type CopyEnd, openDestination, openSource } from "./endpoints.ts";
import type { ProgressReporter } from "./progress.ts";
import { transfer } from "./transfer.ts";

/** nbdcopy's defaults for what can be tuned. */
export const COPY_DEFAULTS = {
  /**
   * Connections to each NBD server (used only when it allows multi-conn),
   * at most one per CPU unless asked for explicitly: see {@linkcode defaultConnections}.
   */
  connections: 4,
  /** Requests in flight per connection. */
  requests: 64,
} as const;

/** Bytes read or written per request (nbdcopy's default request size). */
export const REQUEST_SIZE = 256 * 1024;
/** All-zero blocks of this size in data are left as holes (nbdcopy's --sparse default). */
export const SPARSE_BLOCK = 4096;
/**
 * Bytes of data buffers in flight, whatever the connections and requests:
 * 16 requests of {@linkcode REQUEST_SIZE}. nbdcopy's 64 requests per
 * connection, each with a buffer of its own, keep a loopback server no busier;
 * they only cost memory to fault in and cache misses on every copy of the data
 * (issue 12: 4 MiB copied NBD to file fastest, ahead of 2, 8 and 16 MiB).
 * Zero requests hold no buffer and are not bounded by it.
 */
export const BUFFER_BYTES = 4 * 1024 * 1024;

/**
 * The connections used when none are asked for: nbdcopy's 4, but no more
 * than the CPUs, since nbdcopy gives each connection a thread of its own
 * and starts no more threads than there are CPUs.
 */
export function defaultConnections(): number {
  return Math.max(1, Math.min(COPY_DEFAULTS.connections, navigator.hardwareConcurrency));
}

/** Options of {@linkcode copy}, nbdcopy's options by another name. */
export interface CopyOptions {
  /** Connections to each NBD server that allows several ({@linkcode defaultConnections} by default). */
  readonly connections?: number;
  /**
   * nbdcopy's threads: no more connections than this are used (denbd runs on
   * one thread); 0 for the CPUs, as nbdcopy; absent for no such bound.
   */
  readonly threads?: number;
  /** Requests in flight per connection. */
  readonly requests?: number;
  /** Largest read or write ({@linkcode REQUEST_SIZE} by default). */
  readonly requestSize?: number;
  /**
   * Bytes of data requests in flight per connection (nbdcopy's
   * --queue-size); {@linkcode BUFFER_BYTES} in all by default.
   */
  readonly queueSize?: number;
  /** All-zero blocks of this size in data become zero requests or holes; 0 turns it off. */
  readonly sparseBlock?: number;
  /**
   * Leave no holes: zero ranges are zeroed allocated and no sparse detection
   * is done (a file made for the copy still keeps the source's holes, as with nbdcopy).
   */
  readonly allocated?: boolean;
  /** The destination already reads as zeroes: zero ranges are skipped. */
  readonly destinationIsZero?: boolean;
  /** Ask the source for its extents (true by default); otherwise read all of it. */
  readonly extents?: boolean;
  /** Flush the destination at the end (and behind the copy on an NBD destination). */
  readonly flush?: boolean;
  /** One request at a time, in order, over one connection, without sparse detection. */
  readonly synchronous?: boolean;
  /** Receives the progress. */
  readonly progress?: ProgressReporter;
  /** Told how the copy will run once both ends are open (for --verbose). */
  readonly onStart?: (plan: CopyPlan) => void;
}

/** How a copy runs, decided once both ends are open. */
export interface CopyPlan {
  /** The source. */
  readonly source: Endpoint;
  /** The destination. */
  readonly destination: Endpoint;
  /** Connections used to each NBD end. */
  readonly connections: number;
  /** Requests in flight per connection. */
  readonly requests: number;
  /** One request at a time, in order. */
  readonly synchronous: boolean;
  /** Largest read or write. */
  readonly requestSize: number;
}

/**
 * Copy `sourceEnd` to `destinationEnd` (each an NBD URI, a path, "-" for
 * standard input/output, or an NBD server's command to run; the destination
 * may be "null:"); resolves to the bytes of the source copied (zero ranges
 * included). Errors are DenbdErrors whose message names the end that failed.
 */
export async function copy(
  sourceEnd: CopyEnd,
  destinationEnd: CopyEnd,
  options: CopyOptions = {},
): Promise<number> {
  const threads = options.threads === 0
    ? navigator.hardwareConcurrency
    : options.threads ?? Infinity;
  // As nbdcopy: one connection on both sides when either end is a subprocess (no multi-conn).
  const single = options.synchronous || typeof sourceEnd !== "string" ||
    typeof destinationEnd !== "string";
  const connections = single ? 1 : Math.min(options.connections ?? defaultConnections(), threads);
  const open = { connections, writeBehind: options.flush ?? false };
  const source = await openSource(sourceEnd, open);
  return await closingOnExit(source, async () => {
    const destination = await openDestination(destinationEnd, {
      ...open,
      sourceSize: source.size,
    });
    return await closingOnExit(destination, () => run(source, destination, connections, options));
  });
}

/** Check sizes, transfer, flush when asked; the progress reporter hears of the start and the end. */
async function run(
  source: Source,
  destination: Destination,
  connections: number,
  options: CopyOptions,
): Promise<number> {
  if (
    source.size !== undefined && destination.size !== undefined && source.size > destination.size
  ) {
    throw new DenbdError(
      "no-space",
      `${destination.name}: the destination (${destination.size} bytes) is smaller than ` +
        `the source (${source.size} bytes)`,
    );
  }
  const { progress, synchronous = false, allocated = false } = options;
  const lanes = Math.min(connections, source.connections, destination.connections);
  const requests = synchronous ? 1 : options.requests ?? COPY_DEFAULTS.requests;
  const maxInFlight = requests * lanes;
  const inOrder = synchronous || source.sequential || destination.sequential;
  const requestSize = Math.min(
    options.requestSize ?? REQUEST_SIZE,
    source.maxRequest,
    destination.maxRequest,
  );
  const bufferBytes = options.queueSize === undefined ? BUFFER_BYTES : options.queueSize * lanes;
  options.onStart?.({
    source,
    destination,
    connections: lanes,
    requests,
    synchronous: inOrder,
    requestSize,
  });
  progress?.start(source.size, inOrder);
  try {
    const bytes = await transfer(source, destination, {
      requestSize,
      maxInFlight,
      maxBuffers: Math.max(1, Math.min(maxInFlight, Math.floor(bufferBytes / requestSize))),
      sparseBlock: inOrder || allocated ? 0 : options.sparseBlock ?? SPARSE_BLOCK,
      // As nbdcopy: a file just truncated for the copy needs no zeroing, even with --allocated.
      skipZeroes: (options.destinationIsZero ?? false) || destination.startsZeroed,
      allocate: allocated,
      extents: options.extents ?? true,
      zeroPerRequest: synchronous,
      onProgress: progress && ((done, data) => progress.advance(done, data)),
    });
    if (options.flush) {
      await destination.flush().catch((error) => {
        throw new DenbdError(
          kindOf(error),
          `${destination.name}: flush failed: ${messageOf(error)}`,
        );
      });
    }
    progress?.finish(true);
    return bytes;
  } catch (error) {
    progress?.finish(false);
    throw error;
  }
}

/**
 * Run `body`, then close `endpoint`. A failure to close is reported only
 * when `body` succeeded (otherwise the first error is the one that matters).
 */
async function closingOnExit<T>(
  endpoint: Source | Destination,
  body: () => Promise<T>,
): Promise<T> {
  let result: T;
  try {
    result = await body();
  } catch (error) {
    await endpoint.close().catch(() => {});
    throw error;
  }
  try {
    await endpoint.close();
  } catch (error) {
    throw new DenbdError(kindOf(error), `${endpoint.name}: close failed: ${messageOf(error)}`);
  }
  return result;
}
