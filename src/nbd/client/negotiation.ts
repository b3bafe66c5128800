/**
 * The client side of the fixed-newstyle handshake, as a session of option
 * requests (like libnbd's "opt mode"): upgrade to TLS with STARTTLS, list
 * exports, ask for an export's details and metadata contexts, negotiate
 * structured replies, then enter transmission with GO, or with EXPORT_NAME
 * for servers that predate GO.
 * Every server answer is checked; anything malformed is a
 * {@linkcode ProtocolError}, and a server that goes silent times out.
 *
 * @module
 */

import { DenbdError } from "../../errors.ts";
import { type BufferedReader, UnexpectedEof } from "../../io/buffered-reader.ts";
import type { ByteStream } from "../../io/byte-stream.ts";
import type { WriteQueue } from "../../io/write-queue.ts";
import {
  nameOf,
  NBD_CLIENT_FLAG,
  NBD_HANDSHAKE_FLAG,
  NBD_INFO,
  NBD_LIMIT,
  NBD_OPT,
  NBD_REP,
  NBD_REP_ERR_BIT,
  NBD_SIZE,
} from "../protocol.ts";
import {
  decodeExportNameReply,
  decodeGreeting,
  decodeInfoReply,
  decodeOptionReplyHeader,
  decodeRepMetaContext,
  decodeRepServer,
  decodeString,
  encodeClientFlags,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOption,
  encodeString,
  type OptionReplyHeader,
  ProtocolError,
} from "../wire.ts";

/** Longest option reply payload accepted from a server. */
const MAX_OPTION_REPLY = 64 * 1024;
/** Most bytes of replies accepted for one option (a LIST of many exports fits easily). */
const MAX_OPTION_REPLIES_TOTAL = 16 * 1024 * 1024;
/** How long to wait for the server to acknowledge NBD_OPT_ABORT before closing anyway. */
const ABORT_TIMEOUT_MS = 1000;

/** An export listed by NBD_OPT_LIST. */
export interface ListedExport {
  /** The export's name. */
  readonly name: string;
  /** Its description ("" if the server gave none). */
  readonly description: string;
}

/** Block size constraints a server announced. */
export interface BlockSizeConstraints {
  /** Minimum block size. */
  readonly minimum: number;
  /** Preferred block size. */
  readonly preferred: number;
  /** Maximum payload size. */
  readonly maximum: number;
}

/** What a server says about an export. */
export interface ExportDetails {
  /** The name the client asked for. */
  readonly requestedName: string;
  /** The server's canonical name, if it sent NBD_INFO_NAME. */
  readonly canonicalName?: string;
  /** The description, if the server sent one. */
  readonly description?: string;
  /** Size in bytes. */
  readonly size: number;
  /** Transmission flags. */
  readonly flags: number;
  /** Block size constraints, if the server sent them. */
  readonly blockSizes?: BlockSizeConstraints;
}

/** An option the server refused, with its reply type and message. */
export class OptionRefused extends DenbdError {
  /** Which option was refused. */
  readonly option: number;
  /** The error reply type (NBD_REP_ERR_*). */
  readonly replyType: number;

  /** Describe the refusal of `option` with `replyType` and the server's `message`. */
  constructor(option: number, replyType: number, message: string) {
    const reason = nameOf(NBD_REP, replyType);
    const hint = replyType === NBD_REP.ERR_TLS_REQD
      ? " (the server requires TLS: use an nbds:// or nbds+unix:// URI)"
      : "";
    super(
      replyType === NBD_REP.ERR_UNKNOWN ? "not-found" : "invalid",
      `server refused ${nameOf(NBD_OPT, option)}: ${reason}${message ? `: ${message}` : ""}${hint}`,
    );
    this.name = "OptionRefused";
    this.option = option;
    this.replyType = replyType;
  }
}

/** How the session talks to the server. */
export interface NegotiationChannel {
  /** Reads from the server. */
  readonly reader: BufferedReader;
  /** Writes to the server. */
  readonly writer: WriteQueue;
  /** Bound on each wait for the server, in milliseconds. */
  readonly timeoutMs: number;
}

/** An option-haggling session with one server. */
export class NegotiationSession {
  readonly #channel: NegotiationChannel;
  /** The server supports fixed newstyle (and so options other than EXPORT_NAME). */
  readonly fixedNewstyle: boolean;
  /** The server will omit the 124 zero bytes after EXPORT_NAME. */
  readonly noZeroes: boolean;
  #structured = false;
  #tls = false;
  /** GO or EXPORT_NAME succeeded: the session is over, options can no longer be sent. */
  #inTransmission = false;
  #contexts = new Map<number, string>();

  private constructor(channel: NegotiationChannel, handshakeFlags: number) {
    this.#channel = channel;
    this.fixedNewstyle = (handshakeFlags & NBD_HANDSHAKE_FLAG.FIXED_NEWSTYLE) !== 0;
    this.noZeroes = (handshakeFlags & NBD_HANDSHAKE_FLAG.NO_ZEROES) !== 0;
  }

  /** Read the greeting and answer with the client flags. */
  static async start(channel: NegotiationChannel): Promise<NegotiationSession> {
    const greeting = await within(
      channel,
      channel.reader.readExact(NBD_SIZE.GREETING),
      "the server's greeting",
    );
    const session = new NegotiationSession(channel, decodeGreeting(greeting));
    const flags = (session.fixedNewstyle ? NBD_CLIENT_FLAG.FIXED_NEWSTYLE : 0) |
      (session.noZeroes ? NBD_CLIENT_FLAG.NO_ZEROES : 0);
    await channel.writer.send([encodeClientFlags(flags)]);
    return session;
  }

  /** The session runs over TLS (STARTTLS succeeded). */
  get tls(): boolean {
    return this.#tls;
  }

  /** Structured replies were negotiated. */
  get structured(): boolean {
    return this.#structured;
  }

  /** Metadata contexts selected by the last SET_META_CONTEXT, by id. */
  get contexts(): ReadonlyMap<number, string> {
    return this.#contexts;
  }

  /**
   * Upgrade to TLS: send NBD_OPT_STARTTLS and, once the server acknowledged
   * it, run `handshake` (the TLS handshake over the plain connection, which
   * resolves to the encrypted stream) and continue the session over that
   * stream. Everything negotiated before is forgotten, as the protocol says
   * (structured replies, metadata contexts). A refusal is an
   * {@linkcode OptionRefused} and the session goes on in plain text; whether
   * that is acceptable is the caller's decision. Bytes the server sent after
   * its acknowledgement, before the TLS handshake, are a protocol error:
   * they were sent in plain text where only TLS may follow.
   */
  async startTls(handshake: () => Promise<ByteStream>): Promise<void> {
    this.#requireFixedNewstyle(NBD_OPT.STARTTLS);
    if (this.#tls) throw new DenbdError("invalid", "the session already runs over TLS");
    const replies = await this.#exchange(NBD_OPT.STARTTLS, new Uint8Array(), false);
    if (replies!.length) expectType(replies![0].header, NBD_REP.ACK);
    const injected = this.#channel.reader.buffered;
    if (injected) {
      throw new ProtocolError(
        `server sent ${injected} bytes in plain text after acknowledging NBD_OPT_STARTTLS`,
      );
    }
    const stream = await within(this.#channel, handshake(), "the TLS handshake");
    this.#channel.reader.replaceStream(stream);
    this.#channel.writer.replaceStream(stream);
    this.#tls = true;
    this.#structured = false;
    this.#contexts = new Map();
  }

  /** Ask for structured replies; false if the server does not offer them. */
  async requestStructuredReplies(): Promise<boolean> {
    if (!this.fixedNewstyle) return false;
    const replies = await this.#exchange(NBD_OPT.STRUCTURED_REPLY, new Uint8Array(), true);
    this.#structured = replies !== null;
    return this.#structured;
  }

  /** The server's exports (NBD_OPT_LIST). */
  async list(): Promise<ListedExport[]> {
    this.#requireFixedNewstyle(NBD_OPT.LIST);
    const replies = await this.#exchange(NBD_OPT.LIST, new Uint8Array(), false);
    return replies!.map(({ header, payload }) => {
      expectType(header, NBD_REP.SERVER);
      return decodeRepServer(payload);
    });
  }

  /**
   * Details of export `name` (NBD_OPT_INFO), or null when the server does not
   * support NBD_OPT_INFO (old servers; GO may still work).
   */
  info(name: string): Promise<ExportDetails | null> {
    return this.#infoOrGo(NBD_OPT.INFO, name);
  }

  /** The contexts available on export `name` matching `queries` (all if none). */
  async listMetaContexts(name: string, queries: readonly string[] = []): Promise<string[] | null> {
    if (!this.#structured) return null;
    const data = encodeMetaContextRequest({ exportName: name, queries });
    const replies = await this.#exchange(NBD_OPT.LIST_META_CONTEXT, data, true);
    return replies?.map(({ header, payload }) => {
      expectType(header, NBD_REP.META_CONTEXT);
      return decodeRepMetaContext(payload).name;
    }) ?? null;
  }

  /** Select the contexts named `queries` on export `name`; returns those the server chose. */
  async setMetaContexts(
    name: string,
    queries: readonly string[],
  ): Promise<ReadonlyMap<number, string>> {
    this.#contexts = new Map();
    if (!this.#structured) {
      throw new DenbdError("not-supported", "metadata contexts need structured replies");
    }
    const data = encodeMetaContextRequest({ exportName: name, queries });
    const replies = await this.#exchange(NBD_OPT.SET_META_CONTEXT, data, true);
    const contexts = new Map<number, string>();
    for (const { header, payload } of replies ?? []) {
      expectType(header, NBD_REP.META_CONTEXT);
      const { id, name: context } = decodeRepMetaContext(payload);
      if (contexts.has(id)) throw new ProtocolError(`server reused context id ${id}`);
      contexts.set(id, context);
    }
    this.#contexts = contexts;
    return contexts;
  }

  /**
   * Enter transmission on export `name`: NBD_OPT_GO, or NBD_OPT_EXPORT_NAME
   * when the server has no GO. After this the session is over.
   */
  async go(name: string): Promise<ExportDetails> {
    const details = this.fixedNewstyle ? await this.#infoOrGo(NBD_OPT.GO, name) : null;
    const chosen = details ?? await this.#exportName(name);
    this.#inTransmission = true;
    return chosen;
  }

  /** End the session politely (NBD_OPT_ABORT); the server may not answer. */
  async abort(): Promise<void> {
    if (!this.fixedNewstyle || this.#inTransmission) return;
    await this.#channel.writer.send([encodeOption(NBD_OPT.ABORT)]);
    try {
      await within(
        { timeoutMs: Math.min(this.#channel.timeoutMs, ABORT_TIMEOUT_MS) },
        this.#channel.reader.readExactOrEof(NBD_SIZE.OPTION_REPLY_HEADER),
        "the reply to NBD_OPT_ABORT",
      );
    } catch {
      // A server may close without acknowledging ABORT; either way we are done.
    }
  }

  async #infoOrGo(option: number, name: string): Promise<ExportDetails | null> {
    this.#requireFixedNewstyle(option);
    const infos = [NBD_INFO.NAME, NBD_INFO.DESCRIPTION, NBD_INFO.BLOCK_SIZE];
    const replies = await this.#exchange(option, encodeInfoRequest({ name, infos }), true);
    if (replies === null) return null;
    let details: { -readonly [K in keyof ExportDetails]: ExportDetails[K] } | null = null;
    const extra: Partial<ExportDetails> = {};
    for (const { header, payload } of replies) {
      expectType(header, NBD_REP.INFO);
      const info = decodeInfoReply(payload);
      if ("size" in info) details = { requestedName: name, size: info.size, flags: info.flags };
      else if ("name" in info) Object.assign(extra, { canonicalName: info.name });
      else if ("description" in info) Object.assign(extra, { description: info.description });
      else if ("minimum" in info && validBlockSizes(info)) {
        const { minimum, preferred, maximum } = info;
        Object.assign(extra, { blockSizes: { minimum, preferred, maximum } });
      }
    }
    if (!details) {
      throw new ProtocolError(`server accepted ${nameOf(NBD_OPT, option)} without NBD_INFO_EXPORT`);
    }
    return { ...details, ...extra };
  }

  async #exportName(name: string): Promise<ExportDetails> {
    await this.#channel.writer.send([encodeOption(NBD_OPT.EXPORT_NAME, encodeString(name))]);
    const waitingFor = "the reply to NBD_OPT_EXPORT_NAME";
    const reply = await within(this.#channel, this.#channel.reader.readExactOrEof(10), waitingFor);
    if (reply === null) {
      throw new DenbdError("not-found", `server closed the connection: no export '${name}'?`);
    }
    const { size, flags } = decodeExportNameReply(reply.slice());
    if (!this.noZeroes) {
      await within(
        this.#channel,
        this.#channel.reader.skip(NBD_LIMIT.EXPORT_NAME_PADDING),
        waitingFor,
      );
    }
    return { requestedName: name, size, flags };
  }

  #requireFixedNewstyle(option: number): void {
    if (!this.fixedNewstyle) {
      throw new DenbdError(
        "not-supported",
        `the server does not support fixed newstyle, so ${
          nameOf(NBD_OPT, option)
        } is not available`,
      );
    }
  }

  /**
   * Send `option` with `data` and collect its replies up to the final one.
   * Returns the non-final replies; null if the server answered ERR_UNSUP and
   * `unsupportedIsNull`; throws {@linkcode OptionRefused} for other errors.
   */
  async #exchange(
    option: number,
    data: Uint8Array,
    unsupportedIsNull: boolean,
  ): Promise<{ header: OptionReplyHeader; payload: Uint8Array }[] | null> {
    await this.#channel.writer.send([encodeOption(option, data)]);
    const waitingFor = `the reply to NBD_OPT_${nameOf(NBD_OPT, option)}`;
    const replies: { header: OptionReplyHeader; payload: Uint8Array }[] = [];
    let received = 0;
    while (true) {
      const headerBytes = await within(
        this.#channel,
        this.#channel.reader.readExact(NBD_SIZE.OPTION_REPLY_HEADER),
        waitingFor,
      );
      const header = decodeOptionReplyHeader(headerBytes);
      if (header.option !== option) {
        throw new ProtocolError(
          `server answered ${nameOf(NBD_OPT, header.option)} to ${nameOf(NBD_OPT, option)}`,
        );
      }
      if (header.length > MAX_OPTION_REPLY) {
        throw new ProtocolError(`option reply of ${header.length} bytes is too large`);
      }
      received += header.length;
      if (received > MAX_OPTION_REPLIES_TOTAL) {
        throw new ProtocolError(
          `server sent too much in reply to NBD_OPT_${nameOf(NBD_OPT, option)}`,
        );
      }
      const payload = new Uint8Array(header.length);
      await within(this.#channel, this.#channel.reader.readInto(payload), waitingFor);
      if (header.type === NBD_REP.ACK) return replies;
      if (header.type >= NBD_REP_ERR_BIT) {
        if (header.type === NBD_REP.ERR_UNSUP && unsupportedIsNull) return null;
        throw new OptionRefused(option, header.type, decodeMessage(payload));
      }
      replies.push({ header, payload });
    }
  }
}

function expectType(header: OptionReplyHeader, type: number): void {
  if (header.type !== type) {
    throw new ProtocolError(
      `unexpected ${nameOf(NBD_REP, header.type)} reply to ${nameOf(NBD_OPT, header.option)}`,
    );
  }
}

function decodeMessage(payload: Uint8Array): string {
  try {
    return decodeString(payload, "error message");
  } catch {
    return "";
  }
}

/**
 * Whether announced block sizes obey the spec's rules; constraints that do
 * not are ignored (the defaults apply), as libnbd does.
 */
function validBlockSizes(sizes: BlockSizeConstraints): boolean {
  const powerOfTwo = (n: number) => n > 0 && (n & (n - 1)) === 0;
  return powerOfTwo(sizes.minimum) && sizes.minimum <= 65536 && powerOfTwo(sizes.preferred) &&
    sizes.preferred >= Math.max(sizes.minimum, 512) && sizes.maximum >= sizes.preferred &&
    (sizes.maximum % sizes.minimum === 0 || sizes.maximum === 0xffff_ffff);
}

/**
 * Wait for `operation`, failing with a clear error (naming `waitingFor`, what
 * the client waits for) if the server stays silent too long or hangs up.
 */
export async function within<T>(
  channel: { timeoutMs: number },
  operation: Promise<T>,
  waitingFor = "an answer",
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new DenbdError(
            "io",
            `server did not answer within ${channel.timeoutMs / 1000}s (waiting for ${waitingFor})`,
          ),
        ),
      channel.timeoutMs,
    );
  });
  try {
    return await Promise.race([operation, timeout]);
  } catch (error) {
    if (error instanceof UnexpectedEof) {
      throw new DenbdError("io", `server closed the connection (waiting for ${waitingFor})`, {
        cause: error,
      });
    }
    if (error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.BrokenPipe) {
      throw new DenbdError(
        "io",
        `connection to the server failed (waiting for ${waitingFor}): ${error.message}`,
        { cause: error },
      );
    }
    throw error;
  } finally {
    clearTimeout(timer);
  }
}
