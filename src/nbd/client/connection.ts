/**
 * One client connection in the transmission phase: requests are pipelined
 * (many in flight, matched to replies by cookie) and every reply is checked
 * against its request. A server that breaks the protocol (bad magic, unknown
 * cookie, chunks outside the request, too little data, oversized chunks,
 * status for a context that was not negotiated) or goes silent fails every
 * outstanding request with a clear error and the connection is closed;
 * nothing is ever returned half-checked. A request stays outstanding until
 * its whole reply has been read and checked, so no failure can leave it
 * unsettled. After an NBD_ESHUTDOWN error the client stops sending new
 * requests and disconnects softly once the ones in flight are answered, as
 * the protocol requires.
 *
 * @module
 */

import { DenbdError, messageOf } from "../../errors.ts";
import { type BufferedReader, UnexpectedEof } from "../../io/buffered-reader.ts";
import type { ByteStream } from "../../io/byte-stream.ts";
import type { WriteQueue } from "../../io/write-queue.ts";
import { describeNbdError, kindOfNbdError } from "../errors.ts";
import {
  nameOf,
  NBD_CMD,
  NBD_CMD_FLAG,
  NBD_ERROR,
  NBD_LIMIT,
  NBD_MAGIC,
  NBD_REPLY_FLAG,
  NBD_REPLY_TYPE,
  NBD_REPLY_TYPE_ERR_BIT,
  NBD_SIZE,
} from "../protocol.ts";
import {
  decodeBlockStatus,
  decodeChunkHeader,
  decodeErrorChunk,
  decodeOffset,
  decodeOffsetHole,
  decodeSimpleReplyHeader,
  encodeRequestHeader,
  peekReplyMagic,
  ProtocolError,
  type StatusDescriptor,
} from "../wire.ts";
import type { ExportDetails } from "./negotiation.ts";

/** Largest error chunk accepted: the fixed fields, a maximal message and an offset. */
const MAX_ERROR_CHUNK = 14 + NBD_LIMIT.MAX_STRING;
/** Most error chunks one reply may have. */
const MAX_ERROR_CHUNKS = 1024;
/** Most content chunks one read reply may have. */
const MAX_READ_CHUNKS = 65536;

/** A command the server answered with an error. */
export class NbdCommandError extends DenbdError {
  /** The NBD error number. */
  readonly errno: number;

  /** `command` failed with `errno`; `message` is the server's text, if any. */
  constructor(command: number, errno: number, message: string) {
    super(
      kindOfNbdError(errno),
      `${nameOf(NBD_CMD, command).toLowerCase().replace("_", "-")}: ${describeNbdError(errno)}` +
        (message ? ` (server: ${message})` : ""),
    );
    this.name = "NbdCommandError";
    this.errno = errno;
  }
}

/** What transmission needs to know about the negotiated session. */
export interface ClientSession {
  /** The export as the server described it. */
  readonly details: ExportDetails;
  /** Structured replies were negotiated. */
  readonly structured: boolean;
  /** Selected metadata contexts by id. */
  readonly contexts: ReadonlyMap<number, string>;
  /** The connection runs over TLS. */
  readonly tls: boolean;
}

/** Block status of one request: descriptors per context name. */
export type StatusReply = Map<string, StatusDescriptor[]>;

/** One request awaiting its reply. */
interface Pending {
  readonly type: number;
  readonly flags: number;
  readonly offset: number;
  readonly length: number;
  /** Where read data goes. */
  readonly target?: Uint8Array;
  /** Byte ranges of the read already covered by content chunks, merged and sorted. */
  readonly covered: [number, number][];
  chunks: number;
  /** Error chunks received (bounded, so a server cannot keep a request alive forever). */
  errorChunks: number;
  readonly statuses: StatusReply;
  error?: { errno: number; message: string };
  readonly resolve: (value: StatusReply | void) => void;
  readonly reject: (error: unknown) => void;
}

/** A connection in the transmission phase. */
export class NbdClientConnection {
  readonly #stream: ByteStream;
  readonly #reader: BufferedReader;
  readonly #writer: WriteQueue;
  readonly #session: ClientSession;
  readonly #timeoutMs: number;
  readonly #pending = new Map<bigint, Pending>();
  #nextCookie = 1n;
  #failure: Error | null = null;
  /** Set once a soft disconnect began: new requests are refused with it. */
  #closing: DenbdError | null = null;
  #disconnecting: Promise<void> | null = null;
  #idleWaiters: (() => void)[] = [];
  #watchdog: ReturnType<typeof setTimeout> | undefined;
  readonly #replies: Promise<void>;

  /**
   * Take over `stream` (a socket, or the TLS session over it) after
   * negotiation; `timeoutMs` bounds each wait for the server.
   */
  constructor(
    stream: ByteStream,
    reader: BufferedReader,
    writer: WriteQueue,
    session: ClientSession,
    timeoutMs: number,
  ) {
    this.#stream = stream;
    this.#reader = reader;
    this.#writer = writer;
    this.#session = session;
    this.#timeoutMs = timeoutMs;
    this.#replies = this.#readReplies();
  }

  /** The negotiated session. */
  get session(): ClientSession {
    return this.#session;
  }

  /** Requests sent and not yet answered. */
  get inFlight(): number {
    return this.#pending.size;
  }

  /** Read `into.length` bytes at `offset` into `into` (one request). */
  async read(offset: number, into: Uint8Array, flags = 0): Promise<void> {
    await this.#request(NBD_CMD.READ, flags, offset, into.length, undefined, into);
  }

  /** Write `data` at `offset` (one request). */
  async write(offset: number, data: Uint8Array, flags = 0): Promise<void> {
    await this.#request(NBD_CMD.WRITE, flags, offset, data.length, data);
  }

  /** Send a request without payload (FLUSH, TRIM, CACHE, WRITE_ZEROES). */
  async command(type: number, offset: number, length: number, flags = 0): Promise<void> {
    await this.#request(type, flags, offset, length);
  }

  /** Block status of `length` bytes at `offset`, for every negotiated context. */
  async blockStatus(offset: number, length: number, flags = 0): Promise<StatusReply> {
    return (await this.#request(NBD_CMD.BLOCK_STATUS, flags, offset, length)) as StatusReply;
  }

  /**
   * End the session cleanly: wait for the replies in flight, send
   * NBD_CMD_DISC and close. Errors of the server are not reported here.
   */
  async disconnect(): Promise<void> {
    await this.#softDisconnect(new DenbdError("shutdown", "connection closed by the client"));
    await this.#replies;
  }

  /**
   * Refuse new requests with `reason`, wait for the ones in flight, send
   * NBD_CMD_DISC and close (once, whoever asks first).
   */
  #softDisconnect(reason: DenbdError): Promise<void> {
    this.#closing ??= reason;
    this.#disconnecting ??= (async () => {
      if (this.#pending.size && this.#failure === null) {
        await new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
      }
      if (this.#failure === null) {
        try {
          const cookie = this.#nextCookie++;
          await this.#writer.send([
            encodeRequestHeader({ flags: 0, type: NBD_CMD.DISC, cookie, offset: 0, length: 0 }),
          ]);
        } catch {
          // The server went away first: nothing left to end.
        }
      }
      this.#fail(this.#closing!);
    })();
    return this.#disconnecting;
  }

  #request(
    type: number,
    flags: number,
    offset: number,
    length: number,
    payload?: Uint8Array,
    target?: Uint8Array,
  ): Promise<StatusReply | void> {
    if (this.#failure) return Promise.reject(this.#failure);
    if (this.#closing) return Promise.reject(this.#closing);
    const cookie = this.#nextCookie++;
    const result = new Promise<StatusReply | void>((resolve, reject) => {
      this.#pending.set(cookie, {
        type,
        flags,
        offset,
        length,
        target,
        covered: [],
        chunks: 0,
        errorChunks: 0,
        statuses: new Map(),
        resolve,
        reject,
      });
    });
    this.#armWatchdog();
    const header = encodeRequestHeader({ flags, type, cookie, offset, length });
    this.#writer.send(payload ? [header, payload] : [header]).catch((error) =>
      this.#fail(new DenbdError("io", `sending to the server failed: ${messageOf(error)}`))
    );
    return result;
  }

  async #readReplies(): Promise<void> {
    try {
      while (true) {
        const head = await this.#reader.readExactOrEof(NBD_SIZE.SIMPLE_REPLY_HEADER);
        if (head === null) {
          // Whether requests were outstanding or not, nothing more can be sent or answered:
          // later requests must fail at once rather than wait for the silence timeout.
          const unanswered = this.#pending.size
            ? ` with ${this.#pending.size} request(s) unanswered`
            : "";
          throw new DenbdError("io", `server closed the connection${unanswered}`);
        }
        const magic = peekReplyMagic(head);
        if (magic === NBD_MAGIC.SIMPLE_REPLY) await this.#simpleReply(head.slice());
        else if (magic === NBD_MAGIC.STRUCTURED_REPLY) await this.#chunk(head.slice());
        else throw new ProtocolError(`server sent a reply with bad magic 0x${magic.toString(16)}`);
        this.#armWatchdog(true);
      }
    } catch (error) {
      this.#fail(this.#failure ?? this.#describeReadFailure(error));
    }
  }

  /** A reader failure as the error every outstanding request is failed with. */
  #describeReadFailure(error: unknown): Error {
    const unanswered = `${this.#pending.size} request(s) unanswered`;
    if (error instanceof UnexpectedEof) {
      return new DenbdError(
        "io",
        `server closed the connection in the middle of a reply (${unanswered})`,
        { cause: error },
      );
    }
    if (error instanceof DenbdError || error instanceof ProtocolError) return error;
    return new DenbdError(
      "io",
      `connection to the server failed (${unanswered}): ${messageOf(error)}`,
      { cause: error },
    );
  }

  async #simpleReply(bytes: Uint8Array): Promise<void> {
    const { error, cookie } = decodeSimpleReplyHeader(bytes);
    const pending = this.#lookup(cookie);
    if (pending.type === NBD_CMD.READ && this.#session.structured) {
      throw new ProtocolError("server sent a simple reply to a read after structured replies");
    }
    if (pending.type === NBD_CMD.BLOCK_STATUS && !error) {
      throw new ProtocolError("server sent a simple reply to a block status request");
    }
    if (error) {
      this.#settle(cookie, pending, { errno: error, message: "" });
      return;
    }
    if (pending.type === NBD_CMD.READ) await this.#reader.readInto(pending.target!);
    this.#settle(cookie, pending);
  }

  async #chunk(first: Uint8Array): Promise<void> {
    if (!this.#session.structured) {
      throw new ProtocolError("server sent a structured reply that was not negotiated");
    }
    const bytes = new Uint8Array(NBD_SIZE.STRUCTURED_REPLY_HEADER);
    bytes.set(first);
    bytes.set(await this.#reader.readExact(4), first.length);
    const header = decodeChunkHeader(bytes);
    const pending = this.#lookup(header.cookie);
    const done = (header.flags & NBD_REPLY_FLAG.DONE) !== 0;
    if (header.type & NBD_REPLY_TYPE_ERR_BIT) {
      await this.#errorChunk(pending, header.type, header.length);
    } else {
      switch (header.type) {
        case NBD_REPLY_TYPE.NONE:
          if (header.length !== 0 || !done) throw new ProtocolError("malformed NONE chunk");
          break;
        case NBD_REPLY_TYPE.OFFSET_DATA:
        case NBD_REPLY_TYPE.OFFSET_HOLE:
          await this.#contentChunk(pending, header.type, header.length);
          break;
        case NBD_REPLY_TYPE.BLOCK_STATUS:
          await this.#statusChunk(pending, header.length);
          break;
        default:
          throw new ProtocolError(`server sent unknown chunk type ${header.type}`);
      }
    }
    if (done) this.#finish(header.cookie, pending);
  }

  async #errorChunk(pending: Pending, type: number, length: number): Promise<void> {
    if (length < 6 || length > MAX_ERROR_CHUNK) {
      throw new ProtocolError(`error chunk of ${length} bytes is malformed`);
    }
    if (++pending.errorChunks > MAX_ERROR_CHUNKS) {
      throw new ProtocolError("server sent too many error chunks for one request");
    }
    const payload = new Uint8Array(length);
    await this.#reader.readInto(payload);
    const { error, message, offset } = decodeErrorChunk(
      payload,
      type === NBD_REPLY_TYPE.ERROR_OFFSET,
    );
    if (error === 0) throw new ProtocolError("server sent an error chunk with error 0");
    if (
      offset !== undefined &&
      (offset < pending.offset || offset >= pending.offset + pending.length)
    ) {
      throw new ProtocolError(
        `server reported an error at ${offset}, outside the request of ${pending.length} at ${pending.offset}`,
      );
    }
    pending.error ??= { errno: error, message };
  }

  async #contentChunk(pending: Pending, type: number, length: number): Promise<void> {
    if (pending.type !== NBD_CMD.READ) {
      throw new ProtocolError(`server sent read data in reply to ${nameOf(NBD_CMD, pending.type)}`);
    }
    if (++pending.chunks > MAX_READ_CHUNKS) {
      throw new ProtocolError("read reply has too many chunks");
    }
    if ((pending.flags & NBD_CMD_FLAG.DF) && pending.chunks > 1) {
      throw new ProtocolError("server fragmented a read the client asked not to fragment");
    }
    let offset: number;
    let size: number;
    if (type === NBD_REPLY_TYPE.OFFSET_HOLE) {
      if (length !== 12) throw new ProtocolError(`OFFSET_HOLE chunk of ${length} bytes`);
      ({ offset, length: size } = decodeOffsetHole((await this.#reader.readExact(12)).slice()));
    } else {
      if (length < 9) throw new ProtocolError(`OFFSET_DATA chunk of ${length} bytes`);
      offset = decodeOffset(await this.#reader.readExact(8));
      size = length - 8;
    }
    const start = offset - pending.offset;
    if (size === 0 || start < 0 || start + size > pending.length) {
      throw new ProtocolError(
        `server sent ${size} bytes at ${offset}, outside the read of ${pending.length} at ${pending.offset}`,
      );
    }
    cover(pending.covered, start, start + size);
    const target = pending.target!.subarray(start, start + size);
    if (type === NBD_REPLY_TYPE.OFFSET_HOLE) target.fill(0);
    else await this.#reader.readInto(target);
  }

  async #statusChunk(pending: Pending, length: number): Promise<void> {
    if (pending.type !== NBD_CMD.BLOCK_STATUS) {
      throw new ProtocolError(
        `server sent block status in reply to ${nameOf(NBD_CMD, pending.type)}`,
      );
    }
    if (length < 12 || (length - 4) % 8 !== 0 || length > 4 + 8 * NBD_LIMIT.MAX_EXTENTS) {
      throw new ProtocolError(`block status chunk of ${length} bytes is malformed`);
    }
    const payload = new Uint8Array(length);
    await this.#reader.readInto(payload);
    const { contextId, descriptors } = decodeBlockStatus(payload);
    const name = this.#session.contexts.get(contextId);
    if (name === undefined) {
      throw new ProtocolError(`server sent status for unknown context id ${contextId}`);
    }
    if (pending.statuses.has(name)) throw new ProtocolError(`server sent two chunks for ${name}`);
    checkDescriptors(descriptors, pending, name);
    pending.statuses.set(name, descriptors);
  }

  /** Check a reply that is complete, then settle its request. */
  #finish(cookie: bigint, pending: Pending): void {
    if (pending.error) {
      this.#settle(cookie, pending, pending.error);
      return;
    }
    if (pending.type === NBD_CMD.READ) {
      const [range] = pending.covered;
      const complete = pending.length === 0 ||
        (pending.covered.length === 1 && range[0] === 0 && range[1] === pending.length);
      if (!complete) throw new ProtocolError("server ended a read reply without all the data");
    }
    if (pending.type === NBD_CMD.BLOCK_STATUS) {
      for (const name of this.#session.contexts.values()) {
        if (!pending.statuses.has(name)) {
          throw new ProtocolError(`server sent no status for ${name}`);
        }
      }
    }
    this.#settle(cookie, pending);
  }

  /** The request waiting under `cookie`; it stays outstanding until settled. */
  #lookup(cookie: bigint): Pending {
    const pending = this.#pending.get(cookie);
    if (!pending) throw new ProtocolError(`server replied to unknown cookie ${cookie}`);
    return pending;
  }

  /**
   * Complete a fully checked reply: resolve the request, or reject it with
   * the server's `error`. NBD_ESHUTDOWN starts a soft disconnect.
   */
  #settle(cookie: bigint, pending: Pending, error?: { errno: number; message: string }): void {
    this.#pending.delete(cookie);
    if (!this.#pending.size) this.#wakeIdleWaiters();
    if (error) {
      pending.reject(new NbdCommandError(pending.type, error.errno, error.message));
      if (error.errno === NBD_ERROR.ESHUTDOWN) {
        this.#softDisconnect(
          new DenbdError("shutdown", "the server is shutting down (it answered NBD_ESHUTDOWN)"),
        );
      }
      return;
    }
    pending.resolve(pending.type === NBD_CMD.BLOCK_STATUS ? pending.statuses : undefined);
  }

  #wakeIdleWaiters(): void {
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const wake of waiters) wake();
  }

  /**
   * Keep a silence timer running exactly while requests are outstanding;
   * `progress` (a reply was processed) restarts it.
   */
  #armWatchdog(progress = false): void {
    if (progress || !this.#pending.size) {
      clearTimeout(this.#watchdog);
      this.#watchdog = undefined;
    }
    if (this.#pending.size && this.#watchdog === undefined) {
      this.#watchdog = setTimeout(() => this.#fail(this.#silence()), this.#timeoutMs);
    }
  }

  /** The error of a server that stayed silent: names the oldest request waited for. */
  #silence(): DenbdError {
    const [oldest] = this.#pending.values();
    const name = nameOf(NBD_CMD, oldest.type);
    const what = oldest.length || oldest.offset
      ? `${name} of ${oldest.length} bytes at ${oldest.offset}`
      : name;
    return new DenbdError(
      "io",
      `server did not answer within ${this.#timeoutMs / 1000}s (waiting for the reply to ${what}` +
        `; ${this.#pending.size} request(s) in flight)`,
    );
  }

  /** Fail every outstanding request with `error` and close the connection. */
  #fail(error: Error): void {
    clearTimeout(this.#watchdog);
    if (this.#failure === null) {
      this.#failure = error;
      try {
        this.#stream.close();
      } catch {
        // Already closed.
      }
    }
    for (const pending of this.#pending.values()) pending.reject(this.#failure);
    this.#pending.clear();
    this.#wakeIdleWaiters();
  }
}

/** Add [start, end) to sorted disjoint ranges, refusing overlaps. */
function cover(ranges: [number, number][], start: number, end: number): void {
  let low = 0;
  let high = ranges.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (ranges[middle][0] < start) low = middle + 1;
    else high = middle;
  }
  const before = ranges[low - 1];
  const after = ranges[low];
  if ((before && before[1] > start) || (after && after[0] < end)) {
    throw new ProtocolError("server sent overlapping chunks in one read reply");
  }
  if (before && before[1] === start) {
    before[1] = end;
    if (after && after[0] === end) {
      before[1] = after[1];
      ranges.splice(low, 1);
    }
  } else if (after && after[0] === end) after[0] = start;
  else ranges.splice(low, 0, [start, end]);
}

/** Check a context's descriptors against the request they answer. */
function checkDescriptors(descriptors: StatusDescriptor[], pending: Pending, name: string): void {
  if (descriptors.some((descriptor) => descriptor.length === 0)) {
    throw new ProtocolError(`server sent a zero-length extent for ${name}`);
  }
  if (pending.flags & NBD_CMD_FLAG.REQ_ONE) {
    if (descriptors.length !== 1 || descriptors[0].length > pending.length) {
      throw new ProtocolError(`server ignored REQ_ONE for ${name}`);
    }
    return;
  }
  const allButLast = descriptors.slice(0, -1).reduce((sum, d) => sum + d.length, 0);
  if (allButLast >= pending.length) {
    throw new ProtocolError(`server sent extents past the requested range for ${name}`);
  }
}
