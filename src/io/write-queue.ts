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

/** Chunks at least this large are written directly instead of being copied. */
const DIRECT_WRITE_THRESHOLD = 64 * 1024;
/** Size of the buffer small chunks are coalesced into. */
const COALESCE_BUFFER_SIZE = 256 * 1024;

interface QueuedMessage {
  readonly chunks: readonly Uint8Array[];
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

/** A queue that writes whole messages to a stream, one after another. */
export class WriteQueue {
  #stream: ByteStream;
  #pending: QueuedMessage[] = [];
  #writing: Promise<void> | null = null;
  #failure: unknown = null;
  readonly #scratch = new Uint8Array(COALESCE_BUFFER_SIZE);
  #scratchUsed = 0;

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
    if (this.#failure !== null) return Promise.reject(this.#failure);
    return new Promise((resolve, reject) => {
      this.#pending.push({ chunks, resolve, reject });
      this.#writing ??= this.#writeLoop();
    });
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
          for (const chunk of message.chunks) await this.#append(chunk);
        }
        await this.#flushScratch();
      } catch (error) {
        this.#failure = error;
        for (const message of [...batch, ...this.#pending]) message.reject(error);
        this.#pending = [];
        break;
      }
      for (const message of batch) message.resolve();
    }
    this.#writing = null;
  }

  async #append(chunk: Uint8Array): Promise<void> {
    if (chunk.length >= DIRECT_WRITE_THRESHOLD) {
      await this.#flushScratch();
      await writeAll(this.#stream, chunk);
      return;
    }
    if (this.#scratchUsed + chunk.length > this.#scratch.length) await this.#flushScratch();
    this.#scratch.set(chunk, this.#scratchUsed);
    this.#scratchUsed += chunk.length;
  }

  async #flushScratch(): Promise<void> {
    if (this.#scratchUsed === 0) return;
    const used = this.#scratchUsed;
    this.#scratchUsed = 0;
    await writeAll(this.#stream, this.#scratch.subarray(0, used));
  }
}
