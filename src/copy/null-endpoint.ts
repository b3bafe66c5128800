/**
 * nbdcopy's `null:` destination: every write and zeroing is accepted and
 * thrown away, so that a copy reads its source (its data, not its holes) as
 * fast as it can, for benchmarking a server or the copy itself.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { NullDestination } from "./null-endpoint.ts";
 * const sink = new NullDestination("null:", 1 << 20);
 * await sink.write(0, new Uint8Array(512)); // gone
 * assert.equal(sink.size, 1 << 20);
 * ```
 * @module
 */

import type { Destination } from "./endpoint.ts";

/** A destination that discards everything, as big as the source. */
export class NullDestination implements Destination {
  /** The name the user gave ("null:"). */
  readonly name: string;
  /** A sink. */
  readonly kind = "null";
  /** The source's size: the copy covers all of it. */
  readonly size: number | undefined;
  /** Writes may come in any order. */
  readonly sequential = false;
  /** Needs no connection. */
  readonly connections = Infinity;
  /** Takes requests of any size. */
  readonly maxRequest = Infinity;
  /** Reads as zeroes, so holes of the source need no request at all. */
  readonly startsZeroed = true;

  /** A sink named `name` for a source of `size` bytes (undefined for a stream). */
  constructor(name: string, size: number | undefined) {
    this.name = name;
    this.size = size;
  }

  /** Throw `_data` away. */
  write(_offset: number, _data: Uint8Array): Promise<void> {
    return Promise.resolve();
  }

  /** Nothing to zero. */
  zero(_offset: number, _length: number, _allocate: boolean): Promise<void> {
    return Promise.resolve();
  }

  /** Nothing to make durable. */
  flush(): Promise<void> {
    return Promise.resolve();
  }

  /** Nothing to release. */
  close(): Promise<void> {
    return Promise.resolve();
  }
}
