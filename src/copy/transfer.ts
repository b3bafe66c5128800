/**
 * The copy's worker loop: walk the plan in order and keep up to
 * `maxInFlight` steps running at once, of which at most `maxBuffers` are
 * data steps. A data step reads into a buffer from a pool and writes it (cut
 * into data and zero runs by sparse detection); a zero step zeroes the
 * destination (allocated, with `allocate`), or costs nothing when
 * `skipZeroes` says the destination already reads as zeroes. Buffers
 * are reused, so memory stays within `maxBuffers` buffers of `requestSize`
 * bytes: few buffers that stay in the CPU's caches move data faster than
 * many that each cost page faults and cache misses, while zero steps, which
 * need no buffer, can still have many requests in flight.
 *
 * Order is kept only where an end needs it: a stream source is read one
 * step at a time (its size is learnt at its end), a stream destination is
 * written in source order while reads still run ahead. The first failure
 * stops new steps; the steps in flight are waited for, then it is thrown.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { transfer } from "./transfer.ts";
 * import { openFileDestination, openFileSource } from "./file-endpoint.ts";
 * const path = await Deno.makeTempFile();
 * await Deno.writeFile(path, new Uint8Array(65536).fill(7));
 * const source = await openFileSource(path);
 * const destination = await openFileDestination(`${path}.copy`, source.size);
 * try {
 *   const bytes = await transfer(source, destination, {
 *     requestSize: 16384,
 *     maxInFlight: 4,
 *     maxBuffers: 2,
 *     sparseBlock: 4096,
 *     skipZeroes: destination.startsZeroed,
 *     allocate: false,
 *     extents: true,
 *   });
 *   assert.equal(bytes, 65536);
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
import type { Destination, Source } from "./endpoint.ts";
import {
  EXTENTS_WINDOW,
  type ExtentsQuery,
  planCopy,
  sparseRuns,
  type Step,
  streamSteps,
} from "./plan.ts";

/** How {@linkcode transfer} works. */
export interface TransferSettings {
  /** Largest read or write, in bytes. */
  readonly requestSize: number;
  /** Steps running at once, data and zero steps together. */
  readonly maxInFlight: number;
  /** Data steps running at once (each holds one buffer of `requestSize` bytes); at least 1. */
  readonly maxBuffers: number;
  /** Zero blocks of this size found in data are not written as data; 0 turns detection off. */
  readonly sparseBlock: number;
  /** The destination reads as zeroes already: zero ranges need no request. */
  readonly skipZeroes: boolean;
  /** Zero ranges are zeroed allocated (no holes). */
  readonly allocate: boolean;
  /** Ask the source for its extents; otherwise all of it is read as data. */
  readonly extents: boolean;
  /** Zero ranges are cut into requests of `requestSize` too, as nbdcopy's synchronous copy. */
  readonly zeroPerRequest?: boolean;
  /** Told about every `bytes` of the source done: copied (`data`) or zeroed. */
  readonly onProgress?: (bytes: number, data: boolean) => void;
}

/** Copy every byte of `source` to `destination`; resolves to the bytes of the source copied. */
export function transfer(
  source: Source,
  destination: Destination,
  settings: TransferSettings,
): Promise<number> {
  return new Transfer(source, destination, settings).run();
}

/** The state of one transfer. */
class Transfer {
  readonly #source: Source;
  readonly #destination: Destination;
  readonly #settings: TransferSettings;
  /** Buffers of requestSize bytes not in use. */
  readonly #spare: Uint8Array[] = [];
  #inFlight = 0;
  /** Data steps in flight, each holding a buffer. */
  #buffersInUse = 0;
  #wake?: () => void;
  #failure?: { error: unknown };
  /** Settles when every write started so far has (used for a stream destination). */
  #lastWrite: Promise<unknown> = Promise.resolve();
  #copied = 0;

  constructor(source: Source, destination: Destination, settings: TransferSettings) {
    this.#source = source;
    this.#destination = destination;
    this.#settings = settings;
  }

  async run(): Promise<number> {
    const { requestSize, extents } = this.#settings;
    const size = this.#source.size;
    const query: ExtentsQuery = extents
      ? (offset, length) => this.#source.extents(offset, length)
      : (offset, length) => Promise.resolve([{ offset, length, zero: false }]);
    const steps = size === undefined
      ? streamSteps(requestSize)
      : planCopy(size, query, requestSize, EXTENTS_WINDOW, this.#settings.zeroPerRequest);
    try {
      for await (const step of steps) {
        await this.#slot(step.kind === "data");
        if (this.#failure) break;
        if (step.kind === "zero") {
          this.#zero(step);
          continue;
        }
        const read = this.#copy(step);
        if (this.#source.sequential && await read.catch(() => 0) < step.length) break;
      }
    } catch (error) {
      this.#fail(new DenbdError(kindOf(error), `${this.#source.name}: ${messageOf(error)}`));
    }
    while (this.#inFlight > 0) await new Promise<void>((resolve) => this.#wake = resolve);
    if (this.#failure) throw this.#failure.error;
    return this.#copied;
  }

  /** Wait until another step (one needing a buffer when `needsBuffer`) may start. */
  async #slot(needsBuffer: boolean): Promise<void> {
    const { maxInFlight, maxBuffers } = this.#settings;
    while (
      (this.#inFlight >= maxInFlight || (needsBuffer && this.#buffersInUse >= maxBuffers)) &&
      !this.#failure
    ) {
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
  }

  /** Count `work` (copying `data` or zeroing) as in flight until it settles; its failure stops the transfer. */
  #track(work: Promise<unknown>, bytes: () => number, data: boolean): void {
    this.#inFlight++;
    work.then(
      () => this.#done(bytes(), data),
      (error) => this.#fail(error),
    ).finally(() => {
      this.#inFlight--;
      this.#wake?.();
    });
  }

  #done(bytes: number, data: boolean): void {
    this.#copied += bytes;
    this.#settings.onProgress?.(bytes, data);
  }

  #fail(error: unknown): void {
    this.#failure ??= { error };
  }

  #zero(step: Step): void {
    if (this.#settings.skipZeroes) return this.#done(step.length, false);
    const zeroed = this.#afterEarlierWrites(
      Promise.resolve(),
      () => this.#destination.zero(step.offset, step.length, this.#settings.allocate),
    );
    this.#track(
      zeroed.catch((error) => {
        throw failed(this.#destination.name, "zero", step.offset, step.length, error);
      }),
      () => step.length,
      false,
    );
  }

  /** Start reading `step` and writing what was read; resolves to the count read. */
  #copy(step: Step): Promise<number> {
    const buffer = this.#spare.pop() ?? new Uint8Array(this.#settings.requestSize);
    this.#buffersInUse++;
    const read = this.#source.read(step.offset, buffer.subarray(0, step.length)).catch((error) => {
      throw failed(this.#source.name, "read", step.offset, step.length, error);
    });
    let count = 0;
    const written = this.#afterEarlierWrites(read, (bytes) => {
      count = bytes;
      return bytes > 0 ? this.#write(step.offset, buffer.subarray(0, bytes)) : Promise.resolve();
    });
    this.#track(
      written.finally(() => {
        this.#spare.push(buffer);
        this.#buffersInUse--;
      }),
      () => count,
      true,
    );
    return read;
  }

  /**
   * Run `write` with the value of `ready`; for a stream destination, only
   * after every earlier write (and never after a failure).
   */
  #afterEarlierWrites<T>(ready: Promise<T>, write: (value: T) => Promise<void>): Promise<void> {
    if (!this.#destination.sequential) return ready.then(write);
    const written = Promise.all([ready, this.#lastWrite]).then(([value]) =>
      this.#failure ? undefined : write(value)
    );
    this.#lastWrite = written.catch(() => {});
    return written;
  }

  /** Write `data` (the source's bytes at `offset`), leaving out its zero blocks. */
  async #write(offset: number, data: Uint8Array): Promise<void> {
    const destination = this.#destination;
    if (destination.size !== undefined && offset + data.length > destination.size) {
      throw new DenbdError(
        "no-space",
        `${destination.name}: the source is larger than the destination (${destination.size} bytes)`,
      );
    }
    const { sparseBlock, skipZeroes, allocate } = this.#settings;
    const runs: Step[] = sparseBlock > 0 && !this.#source.sequential && !destination.sequential
      ? sparseRuns(data, offset, sparseBlock)
      : [{ kind: "data", offset, length: data.length }];
    await Promise.all(runs.map(async (run) => {
      try {
        if (run.kind === "data") {
          const start = run.offset - offset;
          await destination.write(run.offset, data.subarray(start, start + run.length));
        } else if (!skipZeroes) {
          await destination.zero(run.offset, run.length, allocate);
        }
      } catch (error) {
        const operation = run.kind === "data" ? "write" : "zero";
        throw failed(destination.name, operation, run.offset, run.length, error);
      }
    }));
  }
}

/** An error of `operation` on `length` bytes at `offset` of the end called `name`. */
function failed(
  name: string,
  operation: string,
  offset: number,
  length: number,
  error: unknown,
): DenbdError {
  return new DenbdError(
    kindOf(error),
    `${name}: ${operation} of ${length} bytes at offset ${offset} failed: ${messageOf(error)}`,
    { cause: error },
  );
}
