/**
 * The two ends of a copy behind one pair of interfaces, whatever they are:
 * an NBD export, a local file or block device, or a stream. The copy engine
 * only ever talks to a {@linkcode Source} and a {@linkcode Destination};
 * each kind of end implements them in its own module, and `endpoints.ts`
 * opens the right one for a name.
 *
 * @module
 */

import type { Extent } from "./plan.ts";

/** What every end of a copy tells about itself. */
export interface Endpoint {
  /** The name the user gave (a URI, a path, "-", or a subprocess's command), for messages. */
  readonly name: string;
  /** What kind of end it is ("nbd", "file", "stream", "null"), for --verbose. */
  readonly kind: string;
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
  /**
   * Make `length` bytes at `offset` read as zeroes: leaving holes where it
   * can, or with `allocate` keeping the range allocated (no hole).
   */
  zero(offset: number, length: number, allocate: boolean): Promise<void>;
  /** Make everything written durable. */
  flush(): Promise<void>;
}
