/**
 * The server's transmission phase: read requests, run many at once against
 * the export, and send each reply whole (replies may complete out of order
 * but never interleave). Memory per connection is bounded: a request's
 * payload is never larger than the advertised maximum, and reading pauses
 * while the requests or bytes in flight exceed a cap. A request stays in
 * flight until its reply is written, and its bytes count the largest reply
 * it may send (a read's data, a block status reply's descriptors), so a
 * client that never reads its replies holds at most that cap in unsent
 * replies.
 *
 * Once a reply cannot be sent (the client went away or reset the
 * connection), the connection is over: no further request is read or
 * started, those already running finish without a reply attempt, and the
 * transmission ends with one error saying so.
 *
 * @module
 */

import { DenbdError, kindOf, messageOf, osErrorText } from "../../errors.ts";
import { NBD_ERRNO_OF_KIND } from "../errors.ts";
import {
  flagNames,
  nameOf,
  NBD_CMD,
  NBD_CMD_FLAG,
  NBD_ERROR,
  NBD_FLAG,
  NBD_LIMIT,
  NBD_REPLY_FLAG,
  NBD_REPLY_TYPE,
  NBD_SIZE,
} from "../protocol.ts";
import {
  decodeRequestHeader,
  encodeBlockStatus,
  encodeChunkHeader,
  encodeErrorChunk,
  encodeOffset,
  encodeOffsetHole,
  encodeSimpleReplyHeader,
  markChunkDone,
  type RequestHeader,
} from "../wire.ts";
import { chainStatus } from "../../block/chain.ts";
import type { NegotiatedSession } from "./handshake.ts";
import type { BufferedReader } from "../../io/buffered-reader.ts";
import { BufferPool } from "../../io/buffer-pool.ts";
import type { WriteQueue } from "../../io/write-queue.ts";
import { type Logger, quoted } from "../../log.ts";
import { RequestCounters } from "./stats.ts";

/** Bounds on one connection's work in progress. */
export interface TransmissionLimits {
  /** Requests being served at once. */
  readonly maxRequests: number;
  /** Payload and reply bytes held at once, unsent replies included (at least one maximum payload). */
  readonly maxBytes: number;
  /**
   * Descriptors in one block status chunk: a reply covers less than asked
   * once it has this many (as the NBD protocol allows), which bounds each
   * request's memory and its time spent scanning.
   */
  readonly maxDescriptors: number;
}

/** Limits used unless the caller sets others. */
export const DEFAULT_TRANSMISSION_LIMITS: TransmissionLimits = {
  maxRequests: 128,
  maxBytes: 2 * NBD_LIMIT.MAX_PAYLOAD,
  maxDescriptors: 4096,
};

/** Streamed reads larger than the maximum payload are sent in pieces of this size. */
const READ_PIECE = 4 * 1024 * 1024;
/** Chunks a sparse read may be split into before the rest is sent as data. */
const MAX_READ_EXTENTS = 256;
/**
 * Read replies and write payloads of every connection, reused: at most this
 * many bytes of them are kept free between requests.
 */
const PAYLOAD_POOL = new BufferPool(32 * 1024 * 1024);
/** Where an OFFSET_DATA chunk's data starts: after the chunk header and the offset. */
const DATA_CHUNK_START = NBD_SIZE.STRUCTURED_REPLY_HEADER + 8;

/** A command's name for messages, e.g. "READ" (made only when a message needs it). */
function commandName(type: number): string {
  return nameOf(NBD_CMD, type);
}

/** How each command is validated. */
interface CommandRule {
  /** The transmission flag the client must have been sent to use the command; 0 when none. */
  readonly needs: number;
  /** Command flags the command accepts (each also needs its flag in COMMAND_FLAG_NEEDS). */
  readonly flags: number;
  /** It changes the export's contents: refused with EPERM when READ_ONLY was sent. */
  readonly writes: boolean;
  /** Error for a range beyond the end; null when offset and length are not a range. */
  readonly beyondEnd: number | null;
}

/**
 * The validation table of every command this server serves. BLOCK_STATUS
 * needs no transmission flag but a negotiated metadata context instead.
 */
const COMMAND_RULES: Readonly<Record<number, CommandRule>> = {
  [NBD_CMD.READ]: {
    needs: 0,
    flags: NBD_CMD_FLAG.FUA | NBD_CMD_FLAG.DF,
    writes: false,
    beyondEnd: NBD_ERROR.EINVAL,
  },
  [NBD_CMD.WRITE]: {
    needs: 0,
    flags: NBD_CMD_FLAG.FUA,
    writes: true,
    beyondEnd: NBD_ERROR.ENOSPC,
  },
  [NBD_CMD.FLUSH]: {
    needs: NBD_FLAG.SEND_FLUSH,
    flags: NBD_CMD_FLAG.FUA,
    writes: false,
    beyondEnd: null,
  },
  [NBD_CMD.TRIM]: {
    needs: NBD_FLAG.SEND_TRIM,
    flags: NBD_CMD_FLAG.FUA,
    writes: true,
    beyondEnd: NBD_ERROR.EINVAL,
  },
  [NBD_CMD.CACHE]: {
    needs: NBD_FLAG.SEND_CACHE,
    flags: NBD_CMD_FLAG.FUA,
    writes: false,
    beyondEnd: NBD_ERROR.EINVAL,
  },
  [NBD_CMD.WRITE_ZEROES]: {
    needs: NBD_FLAG.SEND_WRITE_ZEROES,
    flags: NBD_CMD_FLAG.FUA | NBD_CMD_FLAG.NO_HOLE | NBD_CMD_FLAG.FAST_ZERO,
    writes: true,
    beyondEnd: NBD_ERROR.ENOSPC,
  },
  [NBD_CMD.BLOCK_STATUS]: {
    needs: 0,
    flags: NBD_CMD_FLAG.FUA | NBD_CMD_FLAG.REQ_ONE,
    writes: false,
    beyondEnd: NBD_ERROR.EINVAL,
  },
};

/**
 * The transmission flag the client must have been sent to use each command
 * flag; 0 when none (REQ_ONE comes with BLOCK_STATUS, which needs a
 * metadata context).
 */
const COMMAND_FLAG_NEEDS: Readonly<Record<keyof typeof NBD_CMD_FLAG, number>> = {
  FUA: NBD_FLAG.SEND_FUA,
  NO_HOLE: NBD_FLAG.SEND_WRITE_ZEROES,
  DF: NBD_FLAG.SEND_DF,
  REQ_ONE: 0,
  FAST_ZERO: NBD_FLAG.SEND_FAST_ZERO,
};

/** What one connection allows of a command, from its rule and the transmission flags sent. */
interface Admission {
  /** The command's rule. */
  readonly rule: CommandRule;
  /** Command flags the client may set on it. */
  readonly flags: number;
  /** Refused with EPERM: it writes and the export was announced read-only. */
  readonly readOnly: boolean;
  /** The transmission flag it needs was sent (or it needs none). */
  readonly advertised: boolean;
}

/** The admission of every command in {@linkcode COMMAND_RULES}, given the flags a client was sent. */
function admissionsFor(transmissionFlags: number): ReadonlyMap<number, Admission> {
  let usableFlags = 0;
  for (const [name, needs] of Object.entries(COMMAND_FLAG_NEEDS)) {
    if ((transmissionFlags & needs) === needs) {
      usableFlags |= NBD_CMD_FLAG[name as keyof typeof NBD_CMD_FLAG];
    }
  }
  const readOnly = (transmissionFlags & NBD_FLAG.READ_ONLY) !== 0;
  const admissions = new Map<number, Admission>();
  for (const [type, rule] of Object.entries(COMMAND_RULES)) {
    admissions.set(Number(type), {
      rule,
      flags: rule.flags & usableFlags,
      readOnly: rule.writes && readOnly,
      advertised: (transmissionFlags & rule.needs) === rule.needs,
    });
  }
  return admissions;
}

/** A rejected request: the error number and a message for the client. */
class RequestRejected extends Error {
  constructor(readonly errno: number, message: string) {
    super(message);
  }
}

/** Serves the transmission phase of one connection. */
export class Transmission {
  readonly #reader: BufferedReader;
  readonly #writer: WriteQueue;
  readonly #session: NegotiatedSession;
  readonly #limits: TransmissionLimits;
  readonly #log: Logger;
  readonly #admissions: ReadonlyMap<number, Admission>;
  readonly #counters: RequestCounters;
  #inFlightRequests = 0;
  #inFlightBytes = 0;
  #waiters: (() => void)[] = [];
  #stopping = false;
  /** Why a reply could not be sent; once set, nothing more is read, started or answered. */
  #replyFailure: unknown = null;
  /** Ends the pending read of a request header as if the stream had ended. */
  #interruptRead: ((end: null) => void) | null = null;
  /** Requests read but never answered because a reply failed. */
  #unanswered = 0;
  /** Settles when the block status requests started so far have been gathered. */
  #statusTurn: Promise<void> = Promise.resolve();

  /** Serve `session` over `reader` / `writer` within `limits`, counting requests in `counters`. */
  constructor(
    reader: BufferedReader,
    writer: WriteQueue,
    session: NegotiatedSession,
    log: Logger,
    limits: TransmissionLimits = DEFAULT_TRANSMISSION_LIMITS,
    counters: RequestCounters = new RequestCounters(),
  ) {
    this.#reader = reader;
    this.#writer = writer;
    this.#session = session;
    this.#limits = limits;
    this.#log = log;
    this.#admissions = admissionsFor(session.flags);
    this.#counters = counters;
  }

  /**
   * Read and serve requests until the client disconnects (NBD_CMD_DISC or
   * end of stream), then wait for every request in flight to be answered.
   * Throws on malformed data or a stream failure; requests already read are
   * still completed first. When a reply could not be sent, reading stops at
   * once and, after the requests running have finished, throws one
   * DenbdError ("reply failed: ...") for the whole connection.
   */
  async run(): Promise<void> {
    try {
      while (true) {
        const headerBytes = this.#bufferedHeader() ?? await this.#nextHeader();
        if (headerBytes === null) break;
        const request = decodeRequestHeader(headerBytes);
        if (request.type === NBD_CMD.DISC) break;
        const rejection = this.#validate(request);
        if (rejection === null && this.#serveNow(request)) continue;
        await this.#accept(request, rejection);
      }
    } finally {
      await this.settled();
    }
    if (this.#replyFailure !== null) {
      const why = osErrorText(this.#replyFailure);
      const requests = this.#unanswered === 1 ? "request" : "requests";
      const message = `reply failed: ${why}; ${this.#unanswered} ${requests} not answered`;
      throw new DenbdError("io", message, { cause: this.#replyFailure });
    }
  }

  /**
   * The next request header when it has already arrived and no reply has
   * failed: requests pipelined together are taken without waiting, so a
   * burst of them is served in one turn and its replies leave together.
   */
  #bufferedHeader(): Uint8Array | null {
    if (this.#replyFailure !== null) return null;
    return this.#reader.takeBuffered(NBD_SIZE.REQUEST_HEADER);
  }

  /**
   * The next request header; null at the end of the stream, or once a reply
   * has failed (even while the read is still waiting for bytes).
   */
  #nextHeader(): Promise<Uint8Array | null> {
    if (this.#replyFailure !== null) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      this.#interruptRead = resolve;
      this.#reader.readExactOrEof(NBD_SIZE.REQUEST_HEADER).then(resolve, reject);
    });
  }

  /**
   * Stop serving new requests: those arriving from now on are answered with
   * ESHUTDOWN. Resolves once the requests in flight are answered.
   */
  async stop(): Promise<void> {
    this.#stopping = true;
    await this.settled();
  }

  /** Resolves when no request is in flight and every reply is written. */
  async settled(): Promise<void> {
    while (this.#inFlightRequests > 0) await new Promise<void>((r) => this.#waiters.push(r));
    await this.#writer.drain();
  }

  /**
   * Serve a valid `request` without waiting, when everything it needs is at
   * hand: room within the limits, a read's bytes in the page cache (and known
   * to be data, for a sparse structured read), a write's payload already
   * received and storable at once. Its reply is queued, counted in flight
   * until it is written. False, consuming nothing, when it must take the
   * asynchronous path.
   */
  #serveNow(request: RequestHeader): boolean {
    const { type, offset, length } = request;
    if (type !== NBD_CMD.READ && type !== NBD_CMD.WRITE) return false;
    const cost = this.#costOf(request);
    if (this.#full(cost) || length === 0) return false;
    const exported = this.#session.export;
    if (type === NBD_CMD.READ) {
      const reply = this.#session.structured
        ? this.#dataChunkNow(request)
        : this.#simpleReadNow(request);
      if (reply === null) return false;
      this.#sendCounted(cost, [reply], reply);
      this.#counters.countDone(type, length);
      return true;
    }
    if (exported.writethrough || this.#reader.buffered < length) return false;
    const payload = this.#reader.takeBuffered(length)!;
    if (exported.node.writeNow(offset, payload, { fua: this.#fua(request) })) {
      this.#sendCounted(cost, [encodeSimpleReplyHeader(0, request.cookie)]);
      this.#counters.countDone(type, length);
    } else {
      const copy = PAYLOAD_POOL.take(length);
      copy.set(payload);
      void this.#start(request, cost, () => this.#write(request, copy));
    }
    return true;
  }

  /** A simple read's whole reply, read at once; null when the bytes are not at hand. */
  #simpleReadNow({ offset, length, cookie }: RequestHeader): Uint8Array | null {
    const reply = PAYLOAD_POOL.take(NBD_SIZE.SIMPLE_REPLY_HEADER + length);
    if (!this.#session.export.node.readNow(offset, reply.subarray(NBD_SIZE.SIMPLE_REPLY_HEADER))) {
      PAYLOAD_POOL.give(reply);
      return null;
    }
    encodeSimpleReplyHeader(0, cookie, reply);
    return reply;
  }

  /**
   * A structured read answered by one OFFSET_DATA chunk, read at once; null
   * when the bytes are not at hand or, for a sparse read, the range is not
   * known at once to be all data (holes are then found the asynchronous way).
   */
  #dataChunkNow({ offset, length, cookie, flags }: RequestHeader): Uint8Array | null {
    const exported = this.#session.export;
    const whole = (flags & NBD_CMD_FLAG.DF) !== 0 || !exported.sparseReads;
    if (!whole && !exported.node.holdsDataNow(offset, length)) return null;
    const chunk = PAYLOAD_POOL.take(DATA_CHUNK_START + length);
    if (!exported.node.readNow(offset, chunk.subarray(DATA_CHUNK_START))) {
      PAYLOAD_POOL.give(chunk);
      return null;
    }
    this.#encodeDataChunkHeader(chunk, cookie, offset, length, true);
    return chunk;
  }

  /**
   * Queue a reply made without waiting; `cost` stays counted in flight, as
   * for any request, until the reply is written. `pooled`, a buffer of the
   * reply taken from the pool, goes back once written.
   */
  #sendCounted(cost: number, chunks: readonly Uint8Array[], pooled?: Uint8Array): void {
    this.#inFlightRequests++;
    this.#inFlightBytes += cost;
    this.#writer.queue(chunks, (failure) => {
      if (failure === null) {
        if (pooled) PAYLOAD_POOL.give(pooled);
      } else {
        this.#replyFailed(failure);
      }
      this.#finished(cost, failure === null);
    });
  }

  /**
   * Read `request`'s payload (or skip it when `rejection` refuses it) and
   * start serving it; drop it (unanswered) when a reply failed while it
   * waited for room.
   */
  async #accept(request: RequestHeader, rejection: RequestRejected | null): Promise<void> {
    const payloadLength = request.type === NBD_CMD.WRITE ? request.length : 0;
    if (rejection) {
      await this.#reader.skip(payloadLength);
      await this.#reserve(0);
      if (this.#dropped()) return;
      void this.#start(request, 0, () => Promise.reject(rejection));
      return;
    }
    const cost = this.#costOf(request);
    await this.#reserve(cost);
    if (this.#dropped()) return;
    if (request.type === NBD_CMD.WRITE) {
      const payload = PAYLOAD_POOL.take(request.length);
      await this.#reader.readInto(payload);
      void this.#start(request, cost, () => this.#write(request, payload));
    } else {
      void this.#start(request, cost, () => this.#serve(request));
    }
  }

  /**
   * The bytes `request` holds while in flight: its payload or the largest
   * reply it may send; 0 for requests whose reply is a header.
   */
  #costOf({ type, length, flags }: RequestHeader): number {
    switch (type) {
      case NBD_CMD.WRITE:
      case NBD_CMD.READ:
        return Math.min(length, NBD_LIMIT.MAX_PAYLOAD);
      case NBD_CMD.BLOCK_STATUS: {
        const descriptors = flags & NBD_CMD_FLAG.REQ_ONE ? 1 : this.#limits.maxDescriptors;
        const chunk = NBD_SIZE.STRUCTURED_REPLY_HEADER + 4 + 8 * descriptors;
        return this.#session.contexts.length * chunk;
      }
      default:
        return 0;
    }
  }

  /** Whether a reply has failed, so that a request just read is dropped unanswered. */
  #dropped(): boolean {
    if (this.#replyFailure === null) return false;
    this.#unanswered++;
    return true;
  }

  /** Why `request` must be refused, or null if it may be served. */
  #validate(request: RequestHeader): RequestRejected | null {
    const { type, flags, offset, length } = request;
    if (this.#stopping) return new RequestRejected(NBD_ERROR.ESHUTDOWN, "server shutting down");
    const admission = this.#admissions.get(type);
    if (!admission) {
      return new RequestRejected(NBD_ERROR.EINVAL, `unknown command ${commandName(type)}`);
    }
    const badFlags = flags & ~admission.flags;
    if (badFlags) {
      return new RequestRejected(
        NBD_ERROR.EINVAL,
        `flags 0x${badFlags.toString(16)} not valid for ${commandName(type)}`,
      );
    }
    if (admission.readOnly) {
      return new RequestRejected(NBD_ERROR.EPERM, `${commandName(type)} on a read-only export`);
    }
    const rule = admission.rule;
    if (!admission.advertised) {
      const needs = flagNames(NBD_FLAG, rule.needs);
      return new RequestRejected(
        NBD_ERROR.EINVAL,
        `${commandName(type)} needs ${needs}, which this export does not send`,
      );
    }
    const size = this.#session.export.size;
    if (rule.beyondEnd !== null && offset + length > size) {
      return new RequestRejected(
        rule.beyondEnd,
        `${commandName(type)} of ${length} bytes at ${offset} is beyond the end (${size})`,
      );
    }
    if (type === NBD_CMD.WRITE && length > NBD_LIMIT.MAX_PAYLOAD) {
      return new RequestRejected(NBD_ERROR.EINVAL, `write of ${length} bytes exceeds the maximum`);
    }
    if (type === NBD_CMD.READ) return this.#validateRead(request);
    if (type === NBD_CMD.BLOCK_STATUS) return this.#validateBlockStatus(length);
    return null;
  }

  #validateRead({ flags, length }: RequestHeader): RequestRejected | null {
    if (length <= NBD_LIMIT.MAX_PAYLOAD) return null;
    if (!this.#session.structured) {
      return new RequestRejected(NBD_ERROR.EINVAL, `read of ${length} bytes exceeds the maximum`);
    }
    if (flags & NBD_CMD_FLAG.DF) {
      return new RequestRejected(
        NBD_ERROR.EOVERFLOW,
        `unfragmented read of ${length} bytes exceeds the maximum of ${NBD_LIMIT.MAX_PAYLOAD}`,
      );
    }
    return null;
  }

  #validateBlockStatus(length: number): RequestRejected | null {
    if (!this.#session.structured || this.#session.contexts.length === 0) {
      return new RequestRejected(NBD_ERROR.EINVAL, "no metadata context was negotiated");
    }
    if (length === 0) return new RequestRejected(NBD_ERROR.EINVAL, "block status of 0 bytes");
    return null;
  }

  /** Resolves once `cost` more bytes and one more request fit within the limits. */
  #reserve(cost: number): Promise<void> | void {
    if (!this.#full(cost)) return;
    return (async () => {
      while (this.#full(cost)) await new Promise<void>((resolve) => this.#waiters.push(resolve));
    })();
  }

  #full(cost: number): boolean {
    return this.#inFlightRequests >= this.#limits.maxRequests ||
      (this.#inFlightBytes > 0 && this.#inFlightBytes + cost > this.#limits.maxBytes);
  }

  /**
   * Run `serve` in the background, counted in flight, answering with an
   * error if it fails. Once a reply has failed (this one's or another's),
   * nothing is sent or logged for it: it is counted as not answered.
   */
  async #start(request: RequestHeader, cost: number, serve: () => Promise<void>): Promise<void> {
    this.#inFlightRequests++;
    this.#inFlightBytes += cost;
    let answered = false;
    try {
      await serve();
      answered = true;
      this.#counters.countDone(request.type, request.length);
    } catch (error) {
      if (this.#replyFailure === null) {
        this.#counters.failedOperations++;
        answered = await this.#sendError(request, error).then(() => true, () => false);
      }
    } finally {
      this.#finished(cost, answered);
    }
  }

  /** A request in flight is over (`answered` or not): its room is free for others. */
  #finished(cost: number, answered: boolean): void {
    if (!answered) this.#unanswered++;
    this.#inFlightRequests--;
    this.#inFlightBytes -= cost;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }

  #sendError(request: RequestHeader, error: unknown): Promise<void> {
    const errno = error instanceof RequestRejected ? error.errno : NBD_ERRNO_OF_KIND[kindOf(error)];
    const message = messageOf(error);
    const command = nameOf(NBD_CMD, request.type);
    const exportName = this.#session.export.name;
    if (!(error instanceof RequestRejected)) {
      this.#log.error(
        `${command} at ${request.offset} on export ${quoted(exportName)} failed: ${message}`,
      );
    } else if (this.#log.enabled("debug")) {
      this.#log.debug(`${command} on export ${quoted(exportName)} refused: ${message}`);
    }
    if (!this.#session.structured) {
      return this.#send([encodeSimpleReplyHeader(errno, request.cookie)]);
    }
    const payload = encodeErrorChunk(errno, message);
    return this.#send([
      this.#chunkHeader(request.cookie, NBD_REPLY_TYPE.ERROR, payload.length, true),
      payload,
    ]);
  }

  #chunkHeader(cookie: bigint, type: number, length: number, done: boolean): Uint8Array {
    const flags = done ? NBD_REPLY_FLAG.DONE : 0;
    return encodeChunkHeader({ flags, type, cookie, length });
  }

  #sendOk(cookie: bigint): Promise<void> {
    return this.#send([encodeSimpleReplyHeader(0, cookie)]);
  }

  /**
   * Queue one whole reply. Its failure is the connection's: the first one
   * is kept, and reading stops.
   */
  async #send(chunks: readonly Uint8Array[]): Promise<void> {
    try {
      await this.#writer.send(chunks);
    } catch (error) {
      this.#replyFailed(error);
      throw error;
    }
  }

  /** A reply could not be sent: the first such failure is the connection's, and reading stops. */
  #replyFailed(error: unknown): void {
    if (this.#replyFailure === null) {
      this.#replyFailure = error;
      this.#interruptRead?.(null);
    }
  }

  async #write(request: RequestHeader, payload: Uint8Array): Promise<void> {
    const node = this.#session.export.node;
    try {
      await node.write(request.offset, payload, { fua: this.#fua(request) });
    } finally {
      PAYLOAD_POOL.give(payload);
    }
    await this.#afterWrite();
    await this.#sendOk(request.cookie);
  }

  #fua(request: RequestHeader): boolean {
    return (request.flags & NBD_CMD_FLAG.FUA) !== 0 && !this.#session.export.writethrough;
  }

  /** Writethrough exports flush after every change. */
  async #afterWrite(): Promise<void> {
    if (this.#session.export.writethrough) await this.#session.export.node.flush();
  }

  async #serve(request: RequestHeader): Promise<void> {
    const node = this.#session.export.node;
    const { type, offset, length, flags, cookie } = request;
    switch (type) {
      case NBD_CMD.READ:
        return this.#session.structured ? this.#structuredRead(request) : this.#simpleRead(request);
      case NBD_CMD.FLUSH:
        await node.flush();
        return this.#sendOk(cookie);
      case NBD_CMD.TRIM:
        await node.trim(offset, length, { fua: this.#fua(request) });
        await this.#afterWrite();
        return this.#sendOk(cookie);
      case NBD_CMD.CACHE:
        await node.cache(offset, length);
        return this.#sendOk(cookie);
      case NBD_CMD.WRITE_ZEROES:
        await node.writeZeroes(offset, length, {
          fua: this.#fua(request),
          mayTrim: (flags & NBD_CMD_FLAG.NO_HOLE) === 0,
          fast: (flags & NBD_CMD_FLAG.FAST_ZERO) !== 0,
        });
        await this.#afterWrite();
        return this.#sendOk(cookie);
      case NBD_CMD.BLOCK_STATUS:
        return this.#blockStatus(request);
      default:
        throw new DenbdError("invalid", `command ${nameOf(NBD_CMD, type)} is not served`);
    }
  }

  async #simpleRead({ offset, length, cookie }: RequestHeader): Promise<void> {
    const reply = PAYLOAD_POOL.take(NBD_SIZE.SIMPLE_REPLY_HEADER + length);
    await this.#session.export.node.read(offset, reply.subarray(NBD_SIZE.SIMPLE_REPLY_HEADER));
    encodeSimpleReplyHeader(0, cookie, reply);
    await this.#send([reply]);
    PAYLOAD_POOL.give(reply);
  }

  /**
   * A structured read: holes are sent as OFFSET_HOLE chunks unless the client
   * asked not to fragment; reads over the maximum payload are streamed in pieces.
   */
  async #structuredRead({ offset, length, cookie, flags }: RequestHeader): Promise<void> {
    if (length === 0) {
      return this.#send([this.#chunkHeader(cookie, NBD_REPLY_TYPE.NONE, 0, true)]);
    }
    if (flags & NBD_CMD_FLAG.DF) {
      return this.#send([await this.#dataChunk(cookie, offset, length, true)]);
    }
    for (let done = 0; done < length; done += READ_PIECE) {
      if (this.#replyFailure !== null) throw this.#replyFailure;
      const pieceLength = Math.min(READ_PIECE, length - done);
      const chunks = await this.#sparseChunks(cookie, offset + done, pieceLength);
      if (done + pieceLength === length) markChunkDone(chunks.at(-1)!);
      await this.#send(chunks);
      for (const chunk of chunks) PAYLOAD_POOL.give(chunk);
    }
  }

  /**
   * OFFSET_DATA / OFFSET_HOLE chunks (without the DONE flag) covering a
   * range; holes are where the node's whole backing chain reads as zeroes.
   */
  async #sparseChunks(cookie: bigint, offset: number, length: number): Promise<Uint8Array[]> {
    const node = this.#session.export.node;
    if (!this.#session.export.sparseReads) {
      return [await this.#dataChunk(cookie, offset, length, false)];
    }
    const chunks: Promise<Uint8Array>[] = [];
    let done = 0;
    while (done < length && chunks.length < MAX_READ_EXTENTS) {
      for (const extent of await chainStatus(node, offset + done, length - done)) {
        const at = offset + done;
        chunks.push(
          extent.zero
            ? Promise.resolve(this.#holeChunk(cookie, at, extent.length))
            : this.#dataChunk(cookie, at, extent.length, false),
        );
        done += extent.length;
      }
    }
    if (done < length) chunks.push(this.#dataChunk(cookie, offset + done, length - done, false));
    return Promise.all(chunks);
  }

  #holeChunk(cookie: bigint, offset: number, length: number): Uint8Array {
    const payload = encodeOffsetHole(offset, length);
    const chunk = new Uint8Array(NBD_SIZE.STRUCTURED_REPLY_HEADER + payload.length);
    encodeChunkHeader(
      { flags: 0, type: NBD_REPLY_TYPE.OFFSET_HOLE, cookie, length: payload.length },
      chunk,
    );
    chunk.set(payload, NBD_SIZE.STRUCTURED_REPLY_HEADER);
    return chunk;
  }

  /** One OFFSET_DATA chunk (header and payload in one buffer) read from the node. */
  async #dataChunk(
    cookie: bigint,
    offset: number,
    length: number,
    done: boolean,
  ): Promise<Uint8Array> {
    const chunk = PAYLOAD_POOL.take(DATA_CHUNK_START + length);
    await this.#session.export.node.read(offset, chunk.subarray(DATA_CHUNK_START));
    this.#encodeDataChunkHeader(chunk, cookie, offset, length, done);
    return chunk;
  }

  /** The header and offset of an OFFSET_DATA `chunk` whose `length` data bytes are in place. */
  #encodeDataChunkHeader(
    chunk: Uint8Array,
    cookie: bigint,
    offset: number,
    length: number,
    done: boolean,
  ): void {
    encodeChunkHeader(
      {
        flags: done ? NBD_REPLY_FLAG.DONE : 0,
        type: NBD_REPLY_TYPE.OFFSET_DATA,
        cookie,
        length: 8 + length,
      },
      chunk,
    );
    encodeOffset(chunk, NBD_SIZE.STRUCTURED_REPLY_HEADER, offset);
  }

  /**
   * Answer a block status request. The connection's requests are gathered
   * one at a time: gathering is work on the event loop (a file's lseek
   * scan), so running them side by side gains nothing, while one at a time
   * a client gets the same share as any other whatever its queue depth, and
   * holds one partial answer at most. Requests still waiting for their turn
   * when a reply fails are dropped.
   */
  async #blockStatus(request: RequestHeader): Promise<void> {
    const gathered = this.#statusTurn.then(() => this.#statusChunks(request));
    this.#statusTurn = gathered.then(() => {}, () => {});
    await this.#send(await gathered);
  }

  /** The BLOCK_STATUS chunks answering `request`, one per selected context. */
  async #statusChunks({ offset, length, flags, cookie }: RequestHeader): Promise<Uint8Array[]> {
    if (this.#replyFailure !== null) throw this.#replyFailure;
    const one = (flags & NBD_CMD_FLAG.REQ_ONE) !== 0;
    const contexts = this.#session.contexts;
    const chunks: Uint8Array[] = [];
    for (const [index, { id, context }] of contexts.entries()) {
      let descriptors = await context.statusOf(
        offset,
        length,
        one ? 1 : this.#limits.maxDescriptors,
      );
      if (one) {
        descriptors = [{ ...descriptors[0], length: Math.min(descriptors[0].length, length) }];
      }
      const payload = encodeBlockStatus(id, descriptors);
      const last = index === contexts.length - 1;
      chunks.push(
        this.#chunkHeader(cookie, NBD_REPLY_TYPE.BLOCK_STATUS, payload.length, last),
        payload,
      );
    }
    return chunks;
  }
}
