/**
 * Serialised writes of whole messages: every message (a list of byte chunks)
 * reaches the stream contiguously, never interleaved with another, whatever
 * order concurrent senders finish in. Messages queued while a write is under
 * way are coalesced into as few writes as possible.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { WriteQueue } from "./write-queue.ts";
 * import type { ByteStream } from "./byte-stream.ts";
 * // A stream that records what reaches it (a Deno.Conn in real use).
 * const written: number[] = [];
 * const stream: ByteStream = {
 *   read: () => Promise.resolve(null),
 *   write(data) {
 *     written.push(...data);
 *     return Promise.resolve(data.length);
 *   },
 *   close() {},
 * };
 * const queue = new WriteQueue(stream);
 * const header = new Uint8Array([1, 1]);
 * const payload = new Uint8Array([2, 2, 2]);
 * // Two senders at once: each message arrives whole, never interleaved.
 * await Promise.all([queue.send([header, payload]), queue.send([new Uint8Array([9])])]);
 * assert.deepEqual(written, [1, 1, 2, 2, 2, 9]);
 * ```
 * @module
 */

import { type ByteStream, writeAll } from "./byte-stream.ts";
import { type BufferSizeRange, BufferSizing } from "./buffer-sizing.ts";

/** Chunks at least this large are written directly instead of being copied. */
const DIRECT_WRITE_THRESHOLD = 64 * 1024;
/**
 * Sizes of the buffer small chunks are coalesced into: allocated at the first
 * write, grown while batches overflow it, shrunk again when they stay small.
 */
const COALESCE_BUFFER_SIZES: BufferSizeRange = { initial: 4 * 1024, maximum: 256 * 1024 };

/** Told once a message is written (`null`) or failed to be (why). */
export type WrittenCallback = (failure: unknown) => void;

interface QueuedMessage {
  readonly chunks: readonly Uint8Array[];
  readonly written: WrittenCallback;
}

/** A queue that writes whole messages to a stream, one after another. */
export class WriteQueue {
  #stream: ByteStream;
  #pending: QueuedMessage[] = [];
  #writing: Promise<void> | null = null;
  #failure: unknown = null;
  readonly #scratchSizing = new BufferSizing(COALESCE_BUFFER_SIZES);
  #scratch: Uint8Array | null = null;
  #scratchUsed = 0;
  /** A small chunk not yet copied to the scratch buffer, since it may be written alone. */
  #lone: Uint8Array | null = null;

  /** Write messages to `stream`. */
  constructor(stream: ByteStream) {
    this.#stream = stream;
  }

  /** Switch to another stream (e.g. TLS); only allowed while nothing is queued. */
  replaceStream(stream: ByteStream): void {
    if (this.#writing) throw new Error("cannot switch streams with writes in progress");
    this.#stream = stream;
  }

  /**
   * Queue one message; resolves once all its chunks are written, rejects if
   * the stream failed (then every later send rejects too).
   */
  send(chunks: readonly Uint8Array[]): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue(chunks, (failure) => failure === null ? resolve() : reject(failure));
    });
  }

  /**
   * Queue one message and call `written` once its chunks are written
   * (`null`) or the stream failed (the failure; then every later message
   * fails too). Messages queued in one turn go out in as few writes as
   * possible. `written` is never called before this returns, and must not
   * throw.
   */
  queue(chunks: readonly Uint8Array[], written: WrittenCallback): void {
    if (this.#failure !== null) {
      const failure = this.#failure;
      queueMicrotask(() => written(failure));
      return;
    }
    this.#pending.push({ chunks, written });
    this.#writing ??= Promise.resolve().then(() => this.#writeLoop());
  }

  /** Resolves when every message queued so far has been written (or failed). */
  async drain(): Promise<void> {
    while (this.#writing) await this.#writing;
  }

  async #writeLoop(): Promise<void> {
    while (this.#pending.length > 0) {
      const batch = this.#pending;
      this.#pending = [];
      try {
        for (const message of batch) {
          for (const chunk of message.chunks) {
            const appending = this.#append(chunk);
            if (appending) await appending;
          }
        }
        await this.#flushScratch();
      } catch (error) {
        this.#failure = error;
        for (const message of [...batch, ...this.#pending]) message.written(error);
        this.#pending = [];
        break;
      }
      for (const message of batch) message.written(null);
    }
    this.#writing = null;
  }

  /**
   * Add `chunk` to the current write: a large one is written directly, a
   * small one alone is kept as it is (written without a copy if nothing
   * joins it), small ones together are coalesced into the scratch buffer.
   * Returns a promise only when something had to be written first.
   */
  #append(chunk: Uint8Array): Promise<void> | void {
    if (chunk.length >= DIRECT_WRITE_THRESHOLD) return this.#writeDirect(chunk);
    if (this.#scratchUsed === 0 && this.#lone === null) {
      this.#lone = chunk;
      return;
    }
    if (this.#lone) {
      const lone = this.#lone;
      this.#lone = null;
      this.#copyToScratch(lone);
    }
    if (this.#scratch && this.#scratchUsed + chunk.length > this.#scratch.length) {
      return this.#flushScratch(true).then(() => this.#copyToScratch(chunk));
    }
    this.#copyToScratch(chunk);
  }

  /** Write what is coalesced so far, then `chunk` without copying it. */
  async #writeDirect(chunk: Uint8Array): Promise<void> {
    await this.#flushScratch();
    await writeAll(this.#stream, chunk);
  }

  /** Copy `chunk` after what the scratch buffer holds (the caller made room for it). */
  #copyToScratch(chunk: Uint8Array): void {
    const scratch = this.#scratch;
    if (scratch && this.#scratchUsed + chunk.length > scratch.length) this.#scratch = null;
    if (!this.#scratch) {
      this.#scratchSizing.fit(chunk.length);
      this.#scratch = new Uint8Array(this.#scratchSizing.size);
    }
    this.#scratch.set(chunk, this.#scratchUsed);
    this.#scratchUsed += chunk.length;
  }

  /**
   * Write the chunk kept alone or what the scratch buffer holds,
   * `overflowing` when the buffer is too small for the next chunk; a buffer
   * of another size is allocated at the next use if its sizing changed.
   */
  async #flushScratch(overflowing = false): Promise<void> {
    const lone = this.#lone;
    if (lone) {
      this.#lone = null;
      await writeAll(this.#stream, lone);
      return;
    }
    const scratch = this.#scratch;
    if (!scratch || this.#scratchUsed === 0) return;
    const used = this.#scratchUsed;
    this.#scratchUsed = 0;
    this.#scratchSizing.record(overflowing ? scratch.length : used, scratch.length);
    if (this.#scratchSizing.size !== scratch.length) this.#scratch = null;
    await writeAll(this.#stream, scratch.subarray(0, used));
  }
}
