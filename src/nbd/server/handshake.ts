/**
 * The server side of the fixed-newstyle handshake, as a state machine that
 * takes one client message at a time and answers with the bytes to send and
 * what happens next. It does no I/O itself ({@linkcode negotiate} drives it
 * over a connection), so every path is unit-testable.
 *
 * STARTTLS will hook in here: an outcome that asks the driver to swap the
 * byte stream, after which the state machine resets its negotiated state.
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

/** The answer to one client message. */
export type HandshakeStep =
  /** Send `replies` and read the next option. */
  | { readonly next: "continue"; readonly replies: readonly Uint8Array[] }
  /** Send `replies`, then enter transmission with `session`. */
  | {
    readonly next: "transmission";
    readonly replies: readonly Uint8Array[];
    readonly session: NegotiatedSession;
  }
  /** Send `replies` (if any), then close; `reason` is logged when set. */
  | { readonly next: "close"; readonly replies: readonly Uint8Array[]; readonly reason?: string };

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

  /** Negotiate against the exports in `catalog`. */
  constructor(catalog: ExportCatalog) {
    this.#catalog = catalog;
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
        return reply(option, NBD_REP.ERR_POLICY, "TLS is not configured on this server");
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
    const problem = `option ${nameOf(NBD_OPT, option)} has ${length} bytes of data, ` +
      `over the limit of ${NBD_LIMIT.MAX_OPTION_LENGTH}`;
    if (option === NBD_OPT.EXPORT_NAME || !this.#fixedNewstyle) return close(problem);
    if (option === NBD_OPT.SET_META_CONTEXT) this.#selection = null;
    if (!(Object.values(NBD_OPT) as number[]).includes(option)) return unsupported(option);
    return reply(option, NBD_REP.ERR_INVALID, problem);
  }

  #exportName(data: Uint8Array): HandshakeStep {
    let name: string;
    try {
      name = decodeString(data, "export name");
    } catch (error) {
      return close((error as Error).message);
    }
    const entry = this.#catalog.find(name);
    if (!entry) return close(`client asked for unknown export '${name}' with EXPORT_NAME`);
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
    if (!entry) return reply(option, NBD_REP.ERR_UNKNOWN, `export '${request.name}' not present`);
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
    if (!entry) {
      return reply(option, NBD_REP.ERR_UNKNOWN, `export '${request.exportName}' not present`);
    }
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

/** A single reply (an error carries `message` as its payload), then continue. */
function reply(option: number, type: number, message = ""): HandshakeStep {
  return { next: "continue", replies: [encodeOptionReply(option, type, encodeString(message))] };
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

/**
 * Run the handshake over `channel`. Resolves to the negotiated session, or
 * to null when the client ended the handshake (ABORT or a clean close);
 * throws {@linkcode ProtocolError} (or an I/O error) when the connection must
 * be dropped, with a message saying why.
 */
export async function negotiate(
  channel: HandshakeChannel,
  catalog: ExportCatalog,
): Promise<NegotiatedSession | null> {
  const state = new HandshakeState(catalog);
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
    if (step.next === "close" && !step.reason) {
      // ABORT: the spec lets the client leave without reading our ACK.
      await channel.writer.send(step.replies).catch(() => {});
      return null;
    }
    if (step.replies.length) await channel.writer.send(step.replies);
    if (step.next === "transmission") return step.session;
    if (step.next === "close") {
      if (step.reason) throw new ProtocolError(step.reason);
      return null;
    }
  }
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
