/**
 * Exact reads from a byte stream through one reusable buffer, so that many
 * small protocol headers arriving together cost one read from the socket.
 * The buffer starts small and is sized by {@linkcode BufferSizing}: it grows
 * while reads keep filling it and shrinks again when the stream goes quiet,
 * so an idle connection holds 1 KiB and a busy one needs few system calls.
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
import { type BufferSizeRange, BufferSizing } from "./buffer-sizing.ts";

/** Thrown when the stream ends before the bytes a message needs arrived. */
export class UnexpectedEof extends Error {
  /** `wanted` bytes were needed and only `got` arrived. */
  constructor(readonly wanted: number, readonly got: number) {
    super(`connection closed after ${got} of ${wanted} expected bytes`);
    this.name = "UnexpectedEof";
  }
}

/** Default sizes of the internal buffer: 1 KiB when idle, up to 256 KiB when busy. */
export const READ_BUFFER_SIZES: BufferSizeRange = { initial: 1024, maximum: 256 * 1024 };

/** A reader that hands out exact byte counts from a stream. */
export class BufferedReader {
  #stream: ByteStream;
  readonly #sizing: BufferSizing;
  #buffer: Uint8Array;
  #start = 0;
  #end = 0;

  /** Read from `stream` through a buffer sized within `sizes`. */
  constructor(stream: ByteStream, sizes: BufferSizeRange = READ_BUFFER_SIZES) {
    this.#stream = stream;
    this.#sizing = new BufferSizing(sizes);
    this.#buffer = new Uint8Array(this.#sizing.size);
  }

  /** Bytes already received and not yet consumed. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /** Bytes the internal buffer holds now (what this reader costs in memory). */
  get capacity(): number {
    return this.#buffer.length;
  }

  /**
   * Drop every byte received and not yet consumed, without reading more from
   * the stream; returns the count dropped. Before a switch of streams, bytes
   * that arrived on the old one must not be read as the new one's.
   */
  discardBuffered(): number {
    const count = this.buffered;
    this.#start = this.#end = 0;
    return count;
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
   * valid only until the next call. `length` must not exceed the largest
   * buffer size. Resolves to null if the stream ends cleanly before any byte
   * arrived; throws {@linkcode UnexpectedEof} if it ends part-way.
   */
  async readExactOrEof(length: number): Promise<Uint8Array | null> {
    if (length > this.#sizing.range.maximum) {
      throw new RangeError(`read of ${length} exceeds buffer`);
    }
    while (this.buffered < length) {
      this.#prepareRead(length);
      const room = this.#buffer.length - this.#end;
      const count = await this.#stream.read(this.#buffer.subarray(this.#end));
      if (count === null) {
        if (this.buffered === 0) return null;
        throw new UnexpectedEof(length, this.buffered);
      }
      this.#end += count;
      this.#sizing.record(count, room);
    }
    return this.takeBuffered(length)!;
  }

  /**
   * The next `length` bytes as a view into the internal buffer (valid only
   * until the next call), when they have already arrived; null, consuming
   * nothing, when they have not. Never reads from the stream.
   */
  takeBuffered(length: number): Uint8Array | null {
    if (this.buffered < length) return null;
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

  /**
   * Before reading from the stream: move the unread bytes to the front of a
   * buffer of the size wanted now, big enough for a message of `length`.
   */
  #prepareRead(length: number): void {
    this.#sizing.fit(length); // at least `length`, so above what is buffered
    if (this.#sizing.size !== this.#buffer.length) {
      const resized = new Uint8Array(this.#sizing.size);
      resized.set(this.#buffer.subarray(this.#start, this.#end));
      this.#buffer = resized;
    } else if (this.#start > 0) {
      this.#buffer.copyWithin(0, this.#start, this.#end);
    }
    this.#end -= this.#start;
    this.#start = 0;
  }
}
