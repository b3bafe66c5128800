/**
 * Streams as ends of a copy: standard input and output, pipes, character
 * devices, and a file written from a stream source. Bytes go strictly in
 * order; the size of a source stream is known only at its end; zero ranges
 * are written to a destination stream as zero bytes (a stream has no holes).
 *
 * @module
 */

import { DenbdError } from "../errors.ts";
import type { Destination, Source } from "./endpoint.ts";
import type { Extent } from "./plan.ts";

/** Largest write of zero bytes at once. */
const ZERO_WRITE_SIZE = 1024 * 1024;

/** Something read from in order (Deno.stdin, a Deno.FsFile). */
export interface ReadableStreamLike {
  /** Read into `buffer`; the count read, or null at the end. */
  read(buffer: Uint8Array): Promise<number | null>;
  /** Release it (not done for the standard streams). */
  close?(): void;
}

/** Something written to in order (Deno.stdout, a Deno.FsFile). */
export interface WritableStreamLike {
  /** Write some of `data`; the count written. */
  write(data: Uint8Array): Promise<number>;
  /** Make the written bytes durable (files only). */
  syncData?(): Promise<void>;
  /** Release it (not done for the standard streams). */
  close?(): void;
}

/** A stream read from start to end. */
export class StreamSource implements Source {
  /** The name the user gave ("-" for standard input). */
  readonly name: string;
  /** A stream. */
  readonly kind = "stream";
  /** Unknown until the end. */
  readonly size = undefined;
  /** Always: bytes come in order. */
  readonly sequential = true;
  /** One: reads happen one at a time. */
  readonly connections = 1;
  /** Unbounded. */
  readonly maxRequest = Infinity;
  readonly #stream: ReadableStreamLike;
  #position = 0;

  /** Read `stream`, named `name` in messages. */
  constructor(name: string, stream: ReadableStreamLike) {
    this.name = name;
    this.#stream = stream;
  }

  /** All data: a stream cannot tell. */
  extents(offset: number, length: number): Promise<Extent[]> {
    return Promise.resolve([{ offset, length, zero: false }]);
  }

  /** Fill `into` with the next bytes (`offset` must be where the last read ended). */
  async read(offset: number, into: Uint8Array): Promise<number> {
    checkInOrder(offset, this.#position);
    let done = 0;
    while (done < into.length) {
      const count = await this.#stream.read(into.subarray(done));
      if (count === null) break;
      done += count;
    }
    this.#position += done;
    return done;
  }

  /** Close the stream unless it is a standard one. */
  close(): Promise<void> {
    if (this.#stream !== Deno.stdin) this.#stream.close?.();
    return Promise.resolve();
  }
}

/** A stream written from start to end. */
export class StreamDestination implements Destination {
  /** The name the user gave ("-" for standard output). */
  readonly name: string;
  /** A stream. */
  readonly kind = "stream";
  /** Unbounded: it takes whatever comes. */
  readonly size = undefined;
  /** Always: bytes go in order. */
  readonly sequential = true;
  /** One: writes happen one at a time. */
  readonly connections = 1;
  /** Unbounded. */
  readonly maxRequest = Infinity;
  /** Never: zero ranges must be written. */
  readonly startsZeroed = false;
  readonly #stream: WritableStreamLike;
  #position = 0;
  #zeroes?: Uint8Array;

  /** Write to `stream`, named `name` in messages. */
  constructor(name: string, stream: WritableStreamLike) {
    this.name = name;
    this.#stream = stream;
  }

  /** Write `data` (`offset` must be where the last write ended). */
  async write(offset: number, data: Uint8Array): Promise<void> {
    checkInOrder(offset, this.#position);
    for (let done = 0; done < data.length;) {
      done += await this.#stream.write(done === 0 ? data : data.subarray(done));
    }
    this.#position += data.length;
  }

  /** Write `length` zero bytes (a stream has no holes: always allocated). */
  async zero(offset: number, length: number, _allocate: boolean): Promise<void> {
    const zeroes = this.#zeroes ??= new Uint8Array(ZERO_WRITE_SIZE);
    for (let done = 0; done < length; done += zeroes.length) {
      await this.write(offset + done, zeroes.subarray(0, Math.min(zeroes.length, length - done)));
    }
  }

  /** fdatasync for a file; nothing for other streams. */
  async flush(): Promise<void> {
    await this.#stream.syncData?.();
  }

  /** Close the stream unless it is a standard one. */
  close(): Promise<void> {
    if (this.#stream !== Deno.stdout) this.#stream.close?.();
    return Promise.resolve();
  }
}

function checkInOrder(offset: number, position: number): void {
  if (offset !== position) {
    throw new DenbdError("invalid", `a stream cannot seek (to ${offset} from ${position})`);
  }
}
