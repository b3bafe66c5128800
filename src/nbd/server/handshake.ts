/**
 * The server side of the fixed-newstyle handshake, as a state machine that
 * takes one client message at a time and answers with the bytes to send and
 * what happens next. It does no I/O itself ({@linkcode negotiate} drives it
 * over a connection), so every path is unit-testable.
 *
 * With TLS configured, TLS is required (qemu-nbd's and qemu-storage-daemon's
 * only mode, the spec's FORCEDTLS): before STARTTLS every option is refused
 * with NBD_REP_ERR_TLS_REQD and NBD_OPT_EXPORT_NAME closes the connection.
 * STARTTLS answers with a "starttls" step: the driver sends the ACK, drops
 * whatever plaintext the client sent after its request, runs the TLS
 * handshake and carries on over TLS with every negotiated state forgotten.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { HandshakeState } from "./handshake.ts";
 * import { ExportTable, NbdExport } from "./export.ts";
 * import { MemoryNode } from "../../block/memory.ts";
 * import { NBD_CLIENT_FLAG, NBD_OPT } from "../protocol.ts";
 * const catalog = new ExportTable();
 * catalog.add(new NbdExport({ name: "disk", node: new MemoryNode(1 << 20) }));
 * const state = new HandshakeState(catalog);
 * state.greeting(); // the bytes to send first
 * state.acceptClientFlags(NBD_CLIENT_FLAG.FIXED_NEWSTYLE | NBD_CLIENT_FLAG.NO_ZEROES);
 * const list = state.handleOption(NBD_OPT.LIST, new Uint8Array());
 * assert.equal(list.next, "continue");
 * assert.equal(list.replies.length, 2); // one NBD_REP_SERVER per export, then NBD_REP_ACK
 * const chosen = state.handleOption(NBD_OPT.EXPORT_NAME, new TextEncoder().encode("disk"));
 * assert.equal(chosen.next, "transmission");
 * assert.equal(chosen.session.export.name, "disk");
 * ```
 * @module
 */

import {
  nameOf,
  NBD_CLIENT_FLAG,
  NBD_HANDSHAKE_FLAG,
  NBD_INFO,
  NBD_LIMIT,
  NBD_OPT,
  NBD_REP,
  NBD_SIZE,
} from "../protocol.ts";
import {
  decodeClientFlags,
  decodeInfoRequest,
  decodeMetaContextRequest,
  decodeOptionHeader,
  decodeString,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoReply,
  encodeOptionReply,
  encodeRepMetaContext,
  encodeRepServer,
  encodeString,
  type InfoRequest,
  type MetaContextRequest,
  ProtocolError,
} from "../wire.ts";
import type { ExportCatalog, NbdExport } from "./export.ts";
import { type MetaContext, splitContextName } from "./meta-context.ts";
import { type BufferedReader, READ_BUFFER_SIZES } from "../../io/buffered-reader.ts";
import type { WriteQueue } from "../../io/write-queue.ts";
import type { ByteStream } from "../../io/byte-stream.ts";
import { type Logger, quoted } from "../../log.ts";

/** Handshake flags this server announces. */
export const SERVER_HANDSHAKE_FLAGS = NBD_HANDSHAKE_FLAG.FIXED_NEWSTYLE |
  NBD_HANDSHAKE_FLAG.NO_ZEROES;

const KNOWN_CLIENT_FLAGS = NBD_CLIENT_FLAG.FIXED_NEWSTYLE | NBD_CLIENT_FLAG.NO_ZEROES;

/**
 * Longest option data read and discarded (then the option is refused)
 * before the client is dropped instead: QEMU's limit too (32 MiB).
 * Data up to {@linkcode NBD_LIMIT.MAX_OPTION_LENGTH} is kept and parsed.
 */
export const MAX_SKIPPED_OPTION_LENGTH = NBD_LIMIT.MAX_PAYLOAD;

/**
 * Option data is gathered in pieces the size of a fresh reader's buffer, so
 * memory is spent only on data that arrived and the reader does not grow.
 */
const OPTION_DATA_PIECE = READ_BUFFER_SIZES.initial;

/** A metadata context selected for transmission, with the id the client was given. */
export interface SelectedContext {
  /** The id sent in NBD_REP_META_CONTEXT and used in block status chunks. */
  readonly id: number;
  /** The context. */
  readonly context: MetaContext;
}

/** What the transmission phase needs from a finished handshake. */
export interface NegotiatedSession {
  /** The export chosen. */
  readonly export: NbdExport;
  /** Structured replies were negotiated. */
  readonly structured: boolean;
  /** Transmission flags sent to the client. */
  readonly flags: number;
  /** Metadata contexts selected for this export (empty if none). */
  readonly contexts: readonly SelectedContext[];
}

/** An export a client asked for and did not get, and why: for the log. */
export interface ExportRefusal {
  /** The name as the client sent it (peer-controlled: quote it before printing). */
  readonly name: string;
  /** The option that asked for it. */
  readonly option: number;
  /** Why it was refused. */
  readonly why: string;
}

/** The answer to one client message; `refused` names the export it refused, if it did. */
export type HandshakeStep =
  & (
    /** Send `replies` and read the next option. */
    | { readonly next: "continue"; readonly replies: readonly Uint8Array[] }
    /** Send `replies`, then enter transmission with `session`. */
    | {
      readonly next: "transmission";
      readonly replies: readonly Uint8Array[];
      readonly session: NegotiatedSession;
    }
    /**
     * Send `replies` (the ACK of STARTTLS), then run the TLS handshake and go
     * on reading options inside TLS; the state is already that of a session
     * that negotiated nothing yet.
     */
    | { readonly next: "starttls"; readonly replies: readonly Uint8Array[] }
    /** Send `replies` (if any), then close; `reason` is logged when set. */
    | { readonly next: "close"; readonly replies: readonly Uint8Array[]; readonly reason?: string }
  )
  & { readonly refused?: ExportRefusal };

/**
 * Where the connection stands with TLS: not configured on the server,
 * required and not started yet, or started (STARTTLS acknowledged).
 */
export type TlsStage = "off" | "required" | "started";

/** Contexts chosen by the latest SET_META_CONTEXT and the export it named. */
interface ContextSelection {
  readonly exportName: string;
  readonly contexts: readonly SelectedContext[];
}

/** The option-haggling state of one connection. */
export class HandshakeState {
  readonly #catalog: ExportCatalog;
  #fixedNewstyle = false;
  #noZeroes = false;
  #structured = false;
  #selection: ContextSelection | null = null;
  #tls: TlsStage;

  /**
   * Negotiate against the exports in `catalog`; with `tlsRequired` (the
   * server has TLS credentials) nothing but STARTTLS and ABORT is allowed
   * before TLS.
   */
  constructor(catalog: ExportCatalog, tlsRequired = false) {
    this.#catalog = catalog;
    this.#tls = tlsRequired ? "required" : "off";
  }

  /** Where the connection stands with TLS. */
  get tls(): TlsStage {
    return this.#tls;
  }

  /** The greeting to send first. */
  greeting(): Uint8Array {
    return encodeGreeting(SERVER_HANDSHAKE_FLAGS);
  }

  /** Take the client's flags; throws {@linkcode ProtocolError} on unknown bits. */
  acceptClientFlags(flags: number): void {
    if (flags & ~KNOWN_CLIENT_FLAGS) {
      throw new ProtocolError(`client sent unknown flags 0x${flags.toString(16)}`);
    }
    this.#fixedNewstyle = (flags & NBD_CLIENT_FLAG.FIXED_NEWSTYLE) !== 0;
    this.#noZeroes = (flags & NBD_CLIENT_FLAG.NO_ZEROES) !== 0;
  }

  /** Handle one option with its data. */
  handleOption(option: number, data: Uint8Array): HandshakeStep {
    if (this.#tls === "required") {
      const step = this.#beforeTls(option, data.length);
      const name = requestedExport(option, data);
      return name === null ? step : { ...step, refused: { name, option, why: "TLS required" } };
    }
    if (option === NBD_OPT.EXPORT_NAME) return this.#exportName(data);
    if (!this.#fixedNewstyle) {
      return close(`option ${nameOf(NBD_OPT, option)} from a client without fixed newstyle`);
    }
    switch (option) {
      case NBD_OPT.ABORT:
        return { next: "close", replies: [encodeOptionReply(option, NBD_REP.ACK)] };
      case NBD_OPT.LIST:
        return this.#list(data);
      case NBD_OPT.STARTTLS:
        if (data.length) return reply(option, NBD_REP.ERR_INVALID, STARTTLS_DATA);
        // The spec and QEMU ("TLS already enabled"): INVALID inside TLS, POLICY without TLS.
        return this.#tls === "started"
          ? reply(option, NBD_REP.ERR_INVALID, "TLS already enabled")
          : reply(option, NBD_REP.ERR_POLICY, "TLS is not configured on this server");
      case NBD_OPT.INFO:
      case NBD_OPT.GO:
        return this.#infoOrGo(option, data);
      case NBD_OPT.STRUCTURED_REPLY:
        return this.#structuredReply(data);
      case NBD_OPT.LIST_META_CONTEXT:
      case NBD_OPT.SET_META_CONTEXT:
        return this.#metaContext(option, data);
      default:
        return unsupported(option);
    }
  }

  /**
   * Answer an option with `length` bytes of data, over
   * {@linkcode NBD_LIMIT.MAX_OPTION_LENGTH}, that is not kept: refused as
   * malformed data is (ERR_UNSUP if the option is unknown anyway), after
   * the driver discarded the data unless the answer is to close.
   */
  handleOversizedOption(option: number, length: number): HandshakeStep {
    if (this.#tls === "required") return this.#beforeTls(option, length);
    const problem = `option ${nameOf(NBD_OPT, option)} has ${length} bytes of data, ` +
      `over the limit of ${NBD_LIMIT.MAX_OPTION_LENGTH}`;
    if (option === NBD_OPT.EXPORT_NAME || !this.#fixedNewstyle) return close(problem);
    if (option === NBD_OPT.SET_META_CONTEXT) this.#selection = null;
    if (!(Object.values(NBD_OPT) as number[]).includes(option)) return unsupported(option);
    return reply(option, NBD_REP.ERR_INVALID, problem);
  }

  /**
   * An option (with `length` bytes of data) before TLS while TLS is
   * required. STARTTLS without data is acknowledged and starts TLS; with
   * data it is refused and the connection closed (as QEMU: the client cannot
   * start TLS correctly); EXPORT_NAME cannot be refused, so it closes the
   * connection; everything else, LIST and unknown options included, gets
   * NBD_REP_ERR_TLS_REQD with QEMU's message and negotiation goes on.
   *
   * ABORT is acknowledged and the connection closed, as the spec's ABORT
   * says and nbdkit does; QEMU 7.2 answers it with ERR_TLS_REQD instead
   * (then closes too).
   */
  #beforeTls(option: number, length: number): HandshakeStep {
    switch (option) {
      case NBD_OPT.STARTTLS:
        if (length) {
          return {
            next: "close",
            replies: [encodeOptionReply(option, NBD_REP.ERR_INVALID, encodeString(STARTTLS_DATA))],
            reason: STARTTLS_DATA,
          };
        }
        this.#tls = "started";
        // The spec: after STARTTLS's ACK, everything negotiated before is forgotten.
        this.#structured = false;
        this.#selection = null;
        return { next: "starttls", replies: [encodeOptionReply(option, NBD_REP.ACK)] };
      case NBD_OPT.ABORT:
        return { next: "close", replies: [encodeOptionReply(option, NBD_REP.ACK)] };
      case NBD_OPT.EXPORT_NAME:
        return close(notBeforeTls(option));
      default:
        return reply(option, NBD_REP.ERR_TLS_REQD, notBeforeTls(option));
    }
  }

  #exportName(data: Uint8Array): HandshakeStep {
    let name: string;
    try {
      name = decodeString(data, "export name");
    } catch (error) {
      return close((error as Error).message);
    }
    const entry = this.#catalog.find(name);
    if (!entry) {
      return {
        ...close(`client asked for unknown export ${quoted(name)} with EXPORT_NAME`),
        refused: { name, option: NBD_OPT.EXPORT_NAME, why: "not present" },
      };
    }
    const session = this.#sessionFor(entry);
    return {
      next: "transmission",
      replies: [encodeExportNameReply(entry.size, session.flags, this.#noZeroes)],
      session,
    };
  }

  #list(data: Uint8Array): HandshakeStep {
    if (data.length) return reply(NBD_OPT.LIST, NBD_REP.ERR_INVALID, "LIST takes no data");
    const replies = this.#catalog.list().map((entry) =>
      encodeOptionReply(
        NBD_OPT.LIST,
        NBD_REP.SERVER,
        encodeRepServer(entry.name, entry.description ?? ""),
      )
    );
    replies.push(encodeOptionReply(NBD_OPT.LIST, NBD_REP.ACK));
    return { next: "continue", replies };
  }

  #infoOrGo(option: number, data: Uint8Array): HandshakeStep {
    let request: InfoRequest;
    try {
      request = decodeInfoRequest(data);
    } catch (error) {
      return reply(option, NBD_REP.ERR_INVALID, (error as Error).message);
    }
    const entry = this.#catalog.find(request.name);
    if (!entry) return unknownExport(option, request.name);
    const session = this.#sessionFor(entry);
    const honoursMinimum = option === NBD_OPT.INFO || request.infos.includes(NBD_INFO.BLOCK_SIZE);
    const info = (payload: Uint8Array) => encodeOptionReply(option, NBD_REP.INFO, payload);
    // QEMU's order: what was asked for and the description, then the block sizes, the export last.
    const replies: Uint8Array[] = [];
    if (request.infos.includes(NBD_INFO.NAME)) {
      replies.push(info(encodeInfoReply({ type: NBD_INFO.NAME, name: entry.name })));
    }
    if (entry.description !== undefined) {
      replies.push(
        info(encodeInfoReply({ type: NBD_INFO.DESCRIPTION, description: entry.description })),
      );
    }
    replies.push(
      info(encodeInfoReply({ type: NBD_INFO.BLOCK_SIZE, ...entry.blockSizes(honoursMinimum) })),
      info(encodeInfoReply({ type: NBD_INFO.EXPORT, size: entry.size, flags: session.flags })),
    );
    replies.push(encodeOptionReply(option, NBD_REP.ACK));
    if (option === NBD_OPT.INFO) return { next: "continue", replies };
    return { next: "transmission", replies, session };
  }

  #structuredReply(data: Uint8Array): HandshakeStep {
    const option = NBD_OPT.STRUCTURED_REPLY;
    if (data.length) return reply(option, NBD_REP.ERR_INVALID, "STRUCTURED_REPLY takes no data");
    if (this.#structured) {
      return reply(option, NBD_REP.ERR_INVALID, "structured replies already negotiated");
    }
    this.#structured = true;
    return { next: "continue", replies: [encodeOptionReply(option, NBD_REP.ACK)] };
  }

  #metaContext(option: number, data: Uint8Array): HandshakeStep {
    const isSet = option === NBD_OPT.SET_META_CONTEXT;
    if (isSet) this.#selection = null;
    if (!this.#structured) {
      return reply(option, NBD_REP.ERR_INVALID, "structured replies must be negotiated first");
    }
    let request: MetaContextRequest;
    try {
      request = decodeMetaContextRequest(data);
    } catch (error) {
      return reply(option, NBD_REP.ERR_INVALID, (error as Error).message);
    }
    const entry = this.#catalog.find(request.exportName);
    if (!entry) return unknownExport(option, request.exportName);
    const replies: Uint8Array[] = [];
    if (isSet) {
      const contexts = selectContexts(entry, request.queries);
      for (const { id, context } of contexts) {
        replies.push(
          encodeOptionReply(option, NBD_REP.META_CONTEXT, encodeRepMetaContext(id, context.name)),
        );
      }
      this.#selection = { exportName: entry.name, contexts };
    } else {
      for (const name of listContexts(entry, request.queries)) {
        replies.push(
          encodeOptionReply(option, NBD_REP.META_CONTEXT, encodeRepMetaContext(0, name)),
        );
      }
    }
    replies.push(encodeOptionReply(option, NBD_REP.ACK));
    return { next: "continue", replies };
  }

  /** The session entering transmission on `entry` would have. */
  #sessionFor(entry: NbdExport): NegotiatedSession {
    const selection = this.#selection;
    return {
      export: entry,
      structured: this.#structured,
      flags: entry.transmissionFlags(this.#structured),
      contexts: selection && selection.exportName === entry.name ? selection.contexts : [],
    };
  }
}

/** QEMU's refusal of STARTTLS with data. */
const STARTTLS_DATA = "option 'starttls' has unexpected length";

/** QEMU's message for an option sent before TLS when TLS is required. */
function notBeforeTls(option: number): string {
  return `Option 0x${option.toString(16)} not permitted before TLS`;
}

/** A single reply (an error carries `message` as its payload), then continue. */
function reply(option: number, type: number, message = ""): HandshakeStep {
  return { next: "continue", replies: [encodeOptionReply(option, type, encodeString(message))] };
}

/** ERR_UNKNOWN for an export `name` not present, then continue. */
function unknownExport(option: number, name: string): HandshakeStep {
  return {
    ...reply(option, NBD_REP.ERR_UNKNOWN, `export '${name}' not present`),
    refused: { name, option, why: "not present" },
  };
}

/**
 * The export an option asks for (EXPORT_NAME, INFO, GO, the metadata
 * context options), or null for another option or data that does not parse.
 */
function requestedExport(option: number, data: Uint8Array): string | null {
  try {
    switch (option) {
      case NBD_OPT.EXPORT_NAME:
        return decodeString(data, "export name");
      case NBD_OPT.INFO:
      case NBD_OPT.GO:
        return decodeInfoRequest(data).name;
      case NBD_OPT.LIST_META_CONTEXT:
      case NBD_OPT.SET_META_CONTEXT:
        return decodeMetaContextRequest(data).exportName;
      default:
        return null;
    }
  } catch {
    return null;
  }
}

/** ERR_UNSUP for an option this server does not implement, then continue. */
function unsupported(option: number): HandshakeStep {
  return reply(option, NBD_REP.ERR_UNSUP, `option ${nameOf(NBD_OPT, option)} unsupported`);
}

/** No reply: the connection is to be closed, for `reason`. */
function close(reason: string): HandshakeStep {
  return { next: "close", replies: [], reason };
}

/**
 * Names matching LIST_META_CONTEXT `queries` (all contexts when there are
 * none), in the export's own order of contexts whatever the order of the
 * queries, as QEMU answers. A query without a namespace matches nothing.
 */
function listContexts(entry: NbdExport, queries: readonly string[]): string[] {
  const everything = entry.namespaces.flatMap((space) => space.list(""));
  if (queries.length === 0) return everything;
  const matched = new Set<string>();
  for (const query of queries) {
    const leaf = splitContextName(query)?.leaf;
    if (leaf === undefined) continue;
    for (const name of entry.namespaceOf(query)?.list(leaf) ?? []) matched.add(name);
  }
  return everything.filter((name) => matched.has(name));
}

/** Contexts selected by SET_META_CONTEXT `queries`, numbered from 1, without repeats. */
function selectContexts(entry: NbdExport, queries: readonly string[]): SelectedContext[] {
  const chosen: SelectedContext[] = [];
  for (const query of queries) {
    const context = entry.namespaceOf(query)?.select(query);
    if (context && !chosen.some((selected) => selected.context.name === context.name)) {
      chosen.push({ id: chosen.length + 1, context });
    }
  }
  return chosen;
}

/** Where the handshake driver reads and writes. */
export interface HandshakeChannel {
  /** Reader over the connection. */
  readonly reader: BufferedReader;
  /** Writer over the connection. */
  readonly writer: WriteQueue;
}

/** How the handshake driver starts TLS once it has acknowledged STARTTLS. */
export interface HandshakeTls {
  /**
   * Run the TLS handshake over the connection's own byte stream and check
   * the peer; resolves to the TLS stream to carry on over, or rejects (with
   * the message to log) when the client is to be dropped.
   */
  start(): Promise<ByteStream>;
}

/** What {@linkcode negotiate} runs with beyond the channel and the exports. */
export interface NegotiateOptions {
  /** TLS, required when set: STARTTLS starts it. */
  readonly tls?: HandshakeTls;
  /** Where notable client behaviour is reported (plaintext sent after STARTTLS). */
  readonly log?: Logger;
}

/**
 * Run the handshake over `channel`. Resolves to the negotiated session, or
 * to null when the client ended the handshake (ABORT or a clean close);
 * throws {@linkcode ProtocolError} (or an I/O or TLS error) when the
 * connection must be dropped, with a message saying why.
 *
 * With `options.tls`, after the ACK of STARTTLS every byte the client sent
 * behind its request and that has already arrived is discarded, never read
 * as an option nor fed to TLS (the plaintext injection of CVE-2021-3716 in
 * nbdkit); then TLS starts and the reader and writer move onto it.
 */
export async function negotiate(
  channel: HandshakeChannel,
  catalog: ExportCatalog,
  options: NegotiateOptions = {},
): Promise<NegotiatedSession | null> {
  const state = new HandshakeState(catalog, options.tls !== undefined);
  await channel.writer.send([state.greeting()]);
  const flags = await channel.reader.readExactOrEof(NBD_SIZE.CLIENT_FLAGS);
  if (flags === null) return null;
  state.acceptClientFlags(decodeClientFlags(flags));
  while (true) {
    const headerBytes = await channel.reader.readExactOrEof(NBD_SIZE.OPTION_HEADER);
    if (headerBytes === null) return null;
    const header = decodeOptionHeader(headerBytes);
    if (header.length > MAX_SKIPPED_OPTION_LENGTH) {
      throw new ProtocolError(
        `option ${nameOf(NBD_OPT, header.option)} claims ${header.length} bytes of data, ` +
          `over the limit of ${MAX_SKIPPED_OPTION_LENGTH}`,
      );
    }
    let step: HandshakeStep;
    if (header.length > NBD_LIMIT.MAX_OPTION_LENGTH) {
      step = state.handleOversizedOption(header.option, header.length);
      // The data is discarded before the refusal is sent, unless the client is dropped anyway.
      if (step.next !== "close") await channel.reader.skip(header.length);
    } else {
      step = state.handleOption(header.option, await readOptionData(channel.reader, header.length));
    }
    if (step.refused) logRefusal(options.log, step.refused);
    if (step.next === "close" && !step.reason) {
      // ABORT: the spec lets the client leave without reading our ACK.
      await channel.writer.send(step.replies).catch(() => {});
      return null;
    }
    if (step.replies.length) await channel.writer.send(step.replies);
    if (step.next === "starttls") {
      await startTls(channel, options);
      continue;
    }
    if (step.next === "transmission") return step.session;
    if (step.next === "close") {
      if (step.reason) throw new ProtocolError(step.reason);
      return null;
    }
  }
}

/** Say (with -v) which export a client was refused, and why; the name is quoted as peer text. */
function logRefusal(log: Logger | undefined, refusal: ExportRefusal): void {
  if (!log?.enabled("debug")) return;
  log.debug(
    `refused export ${quoted(refusal.name)} asked for with ${nameOf(NBD_OPT, refusal.option)}: ` +
      refusal.why,
    { export: refusal.name },
  );
}

/**
 * After the ACK of STARTTLS was written: drop the plaintext that followed
 * the request, start TLS and move the reader and writer onto it.
 */
async function startTls(channel: HandshakeChannel, options: NegotiateOptions): Promise<void> {
  const discarded = channel.reader.discardBuffered();
  if (discarded) {
    options.log?.warn(`ignored ${discarded} bytes sent after STARTTLS before the TLS handshake`);
  }
  await channel.writer.drain();
  const stream = await options.tls!.start();
  channel.reader.replaceStream(stream);
  channel.writer.replaceStream(stream);
}

/** The `length` bytes of an option's data, allocated piece by piece as they arrive. */
async function readOptionData(reader: BufferedReader, length: number): Promise<Uint8Array> {
  const pieces: Uint8Array[] = [];
  for (let left = length; left > 0; left -= OPTION_DATA_PIECE) {
    pieces.push((await reader.readExact(Math.min(left, OPTION_DATA_PIECE))).slice());
  }
  if (pieces.length === 1) return pieces[0];
  const data = new Uint8Array(length);
  pieces.forEach((piece, index) => data.set(piece, index * OPTION_DATA_PIECE));
  return data;
}
