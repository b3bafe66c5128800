/**
 * Exact reads from a byte stream through one reusable buffer, so that many
 * small protocol headers arriving together cost one read from the socket.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { BufferedReader } from "./buffered-reader.ts";
 * import type { ByteStream } from "./byte-stream.ts";
 * // A stream whose one read brings two small messages at once (a Deno.Conn in real use).
 * let arriving: Uint8Array | null = new Uint8Array([1, 2, 3, 4, 5, 6]);
 * const stream: ByteStream = {
 *   read(buffer) {
 *     const bytes = arriving;
 *     arriving = null;
 *     if (bytes === null) return Promise.resolve(null);
 *     buffer.set(bytes);
 *     return Promise.resolve(bytes.length);
 *   },
 *   write: (data) => Promise.resolve(data.length),
 *   close() {},
 * };
 * const reader = new BufferedReader(stream);
 * assert.deepEqual(await reader.readExact(2), new Uint8Array([1, 2])); // a view, valid until the next read
 * assert.deepEqual(await reader.readExact(4), new Uint8Array([3, 4, 5, 6]));
 * assert.equal(await reader.readExactOrEof(2), null); // the stream ended between messages
 * ```
 * @module
 */

import type { ByteStream } from "./byte-stream.ts";

/** Thrown when the stream ends before the bytes a message needs arrived. */
export class UnexpectedEof extends Error {
  /** `wanted` bytes were needed and only `got` arrived. */
  constructor(readonly wanted: number, readonly got: number) {
    super(`connection closed after ${got} of ${wanted} expected bytes`);
    this.name = "UnexpectedEof";
  }
}

/** Default size of the internal buffer. */
export const READ_BUFFER_SIZE = 256 * 1024;

/** A reader that hands out exact byte counts from a stream. */
export class BufferedReader {
  #stream: ByteStream;
  readonly #buffer: Uint8Array;
  #start = 0;
  #end = 0;

  /** Read from `stream` through a buffer of `bufferSize` bytes. */
  constructor(stream: ByteStream, bufferSize = READ_BUFFER_SIZE) {
    this.#stream = stream;
    this.#buffer = new Uint8Array(bufferSize);
  }

  /** Bytes already received and not yet consumed. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /**
   * Switch to another stream (e.g. TLS after STARTTLS). Only allowed with no
   * buffered bytes, since those belonged to the old stream.
   */
  replaceStream(stream: ByteStream): void {
    if (this.buffered) throw new Error("cannot switch streams with unread bytes buffered");
    this.#stream = stream;
  }

  /**
   * Resolve to the next `length` bytes as a view into the internal buffer,
   * valid only until the next call. `length` must not exceed the buffer size.
   * Resolves to null if the stream ends cleanly before any byte arrived;
   * throws {@linkcode UnexpectedEof} if it ends part-way.
   */
  async readExactOrEof(length: number): Promise<Uint8Array | null> {
    if (length > this.#buffer.length) throw new RangeError(`read of ${length} exceeds buffer`);
    while (this.buffered < length) {
      if (this.#start > 0 && this.#buffer.length - this.#start < length) this.#compact();
      const count = await this.#stream.read(this.#buffer.subarray(this.#end));
      if (count === null) {
        if (this.buffered === 0) return null;
        throw new UnexpectedEof(length, this.buffered);
      }
      this.#end += count;
    }
    const view = this.#buffer.subarray(this.#start, this.#start + length);
    this.#start += length;
    if (this.#start === this.#end) this.#start = this.#end = 0;
    return view;
  }

  /** Like {@linkcode readExactOrEof}, but the end of the stream is always an error. */
  async readExact(length: number): Promise<Uint8Array> {
    const view = await this.readExactOrEof(length);
    if (view === null) throw new UnexpectedEof(length, 0);
    return view;
  }

  /** Fill all of `target` from the stream (any length; large ones bypass the buffer). */
  async readInto(target: Uint8Array): Promise<void> {
    let done = this.#take(target);
    while (done < target.length) {
      const count = await this.#stream.read(target.subarray(done));
      if (count === null) throw new UnexpectedEof(target.length, done);
      done += count;
    }
  }

  /** Read and drop `length` bytes without keeping them. */
  async skip(length: number): Promise<void> {
    let left = length;
    while (left > 0) {
      const step = Math.min(left, this.#buffer.length);
      await this.readExact(step);
      left -= step;
    }
  }

  /** Copy buffered bytes into the start of `target`; return the count copied. */
  #take(target: Uint8Array): number {
    const count = Math.min(this.buffered, target.length);
    target.set(this.#buffer.subarray(this.#start, this.#start + count));
    this.#start += count;
    if (this.#start === this.#end) this.#start = this.#end = 0;
    return count;
  }

  /** Move the unread bytes to the front of the buffer. */
  #compact(): void {
    this.#buffer.copyWithin(0, this.#start, this.#end);
    this.#end -= this.#start;
    this.#start = 0;
  }
}
