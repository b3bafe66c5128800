/**
 * The NBD client library: connect to an export by URI and read, write,
 * zero, trim, flush, cache and query block status, with requests split to
 * the server's limits and spread over a pool of connections when the server
 * allows several (CAN_MULTI_CONN). {@linkcode withNegotiation} gives
 * option-mode access (listing exports and contexts) without choosing one.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { NbdClient } from "./client.ts";
 * // A server to talk to: denbd's own, exporting 1 MiB of memory as "disk".
 * import { MemoryNode } from "../../block/memory.ts";
 * import { ExportTable, NbdExport } from "../server/export.ts";
 * import { NbdServer } from "../server/server.ts";
 * import { Logger } from "../../log.ts";
 * const catalog = new ExportTable();
 * catalog.add(new NbdExport({ name: "disk", node: new MemoryNode(1 << 20) }));
 * const server = new NbdServer({ catalog, log: new Logger() });
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * server.listen(listener);
 *
 * const client = await NbdClient.connect(`nbd://127.0.0.1:${listener.addr.port}/disk`);
 * try {
 *   await client.write(0, new TextEncoder().encode("hello"));
 *   assert.equal(new TextDecoder().decode(await client.read(0, 5)), "hello");
 *   assert.equal(client.size, 1 << 20);
 * } finally {
 *   await client.disconnect();
 *   await server.close();
 * }
 * ```
 * @module
 */

import { DenbdError } from "../../errors.ts";
import { BufferedReader } from "../../io/buffered-reader.ts";
import type { BufferSizeRange } from "../../io/buffer-sizing.ts";
import type { ByteStream } from "../../io/byte-stream.ts";
import { WriteQueue } from "../../io/write-queue.ts";
import { formatAddress, type SocketAddress } from "../../net/socket-address.ts";
import type { TlsCredentials } from "../../tls/credentials.ts";
import { TlsSession } from "../../tls/session.ts";
import { BASE_ALLOCATION, NBD_CMD, NBD_CMD_FLAG, NBD_FLAG, NBD_LIMIT } from "../protocol.ts";
import type { StatusDescriptor } from "../wire.ts";
import { NbdClientConnection } from "./connection.ts";
import { type ExportDetails, NegotiationSession, within } from "./negotiation.ts";
import {
  loadClientCredentials,
  negotiateTls,
  tlsHostnameOf,
  type TlsMode,
  tlsModeOf,
} from "./tls.ts";
import { type NbdUri, parseNbdUri } from "./uri.ts";

/** How long to wait for the server by default, in milliseconds. */
export const DEFAULT_TIMEOUT_MS = 30_000;
/**
 * Bound on the handshake of each extra pool connection: a server may announce
 * CAN_MULTI_CONN yet admit fewer clients at once (qemu-nbd -e 2), leaving
 * further connections unanswered; the pool then goes on with what it has.
 */
const EXTRA_CONNECTION_TIMEOUT_MS = 3000;
/** Block status requests stay multiples of this when the server announced no block size. */
const DEFAULT_STATUS_ALIGNMENT = 512;
/** Largest zero, trim or cache request sent at once (requests are split beyond). */
const MAX_EFFECT_LENGTH = 1 << 30;
/**
 * Sizes of a connection's read buffer: room for many reply headers and small
 * payloads at once, but small enough that a read's payload goes mostly
 * straight from the socket into the caller's buffer instead of through this
 * one (a larger buffer fills with payload, which must then be copied out).
 */
const REPLY_BUFFER_SIZES: BufferSizeRange = { initial: 1024, maximum: 4096 };

/** Options of a session with a server, in option mode or towards transmission. */
export interface SessionOptions {
  /** Bound on every wait for the server, in milliseconds (the TLS handshake included). */
  readonly timeoutMs?: number;
  /**
   * TLS for an `nbd://` or `nbd+unix://` URI (default "disable", as libnbd);
   * an `nbds` URI always requires it.
   */
  readonly tls?: TlsMode;
}

/** Options of {@linkcode NbdClient.connect}. */
export interface ConnectOptions extends SessionOptions {
  /** Export to use instead of the URI's. */
  readonly exportName?: string;
  /** Ask for structured replies (default true). */
  readonly structuredReplies?: boolean;
  /** Metadata contexts to select, e.g. ["base:allocation"]. */
  readonly metaContexts?: readonly string[];
  /** Connections to open when the server allows several (default 1). */
  readonly connections?: number;
  /**
   * Run in option mode on each connection, after structured replies and before
   * the export is chosen (nbdinfo asks NBD_OPT_INFO and LIST_META_CONTEXT there).
   */
  readonly beforeGo?: (session: NegotiationSession) => Promise<void>;
}

/** Options of a write-like request. */
export interface RequestOptions {
  /** Force unit access. */
  readonly fua?: boolean;
}

/** Options of {@linkcode NbdClient.zero}. */
export interface ZeroRequestOptions extends RequestOptions {
  /** The server must not leave a hole. */
  readonly noHole?: boolean;
  /** Fail (not-supported) unless zeroing is fast. */
  readonly fastZero?: boolean;
}

/** An open client: one export on one or more connections. */
export class NbdClient {
  /** The export as the server described it. */
  readonly details: ExportDetails;
  /** Structured replies were negotiated. */
  readonly structuredReplies: boolean;
  /** Names of the selected metadata contexts. */
  readonly contexts: readonly string[];
  /** TLS was negotiated (on every connection). */
  readonly tls: boolean;
  readonly #connections: NbdClientConnection[];
  #next = 0;

  private constructor(connections: NbdClientConnection[]) {
    this.#connections = connections;
    const { details, structured, contexts, tls } = connections[0].session;
    this.details = details;
    this.structuredReplies = structured;
    this.contexts = [...contexts.values()];
    this.tls = tls;
  }

  /**
   * Connect to the export named by `uri` (a string or parsed URI). Every
   * connection of the pool does TLS alike, with credentials loaded once.
   */
  static async connect(uri: string | NbdUri, options: ConnectOptions = {}): Promise<NbdClient> {
    const target = typeof uri === "string" ? parseNbdUri(uri) : uri;
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const tls = await tlsPlan(target, options);
    try {
      const first = await openConnection(target, options, tls, timeoutMs);
      const connections = [first];
      const wanted = Math.max(1, options.connections ?? 1);
      if (first.session.details.flags & NBD_FLAG.CAN_MULTI_CONN && wanted > 1) {
        // Opened together; those the server does not admit now (it may cap its
        // clients below what it announced) are left out and the pool goes on without them.
        const extraTimeoutMs = Math.min(timeoutMs, EXTRA_CONNECTION_TIMEOUT_MS);
        const extras = await Promise.allSettled(
          Array.from(
            { length: wanted - 1 },
            () => openConnection(target, options, tls, extraTimeoutMs),
          ),
        );
        for (const extra of extras) if (extra.status === "fulfilled") connections.push(extra.value);
      }
      return new NbdClient(connections);
    } finally {
      // The sessions hold their own references; the credentials go with the last one.
      tls.credentials?.release();
    }
  }

  /** Export size in bytes. */
  get size(): number {
    return this.details.size;
  }

  /** Transmission flags. */
  get flags(): number {
    return this.details.flags;
  }

  /** Connections in use (more than one only with CAN_MULTI_CONN). */
  get connectionCount(): number {
    return this.#connections.length;
  }

  /**
   * Largest read or write payload sent in one request: the server's maximum,
   * at most 32 MiB. Valid block sizes make it a multiple of the minimum block
   * (invalid ones are ignored), so the pieces of a split request stay aligned.
   */
  get maxPayload(): number {
    return Math.min(
      this.details.blockSizes?.maximum ?? NBD_LIMIT.MAX_PAYLOAD,
      NBD_LIMIT.MAX_PAYLOAD,
    );
  }

  /**
   * Longest block status request sent: 4 GiB less the minimum block (512 when
   * the server announced none), as libnbd's tools ask, so that the length
   * stays aligned and below the protocol's 32-bit limit.
   */
  get maxStatusLength(): number {
    return 2 ** 32 - (this.details.blockSizes?.minimum ?? DEFAULT_STATUS_ALIGNMENT);
  }

  /** Requests should be multiples of this (the server's minimum block size). */
  get minimumBlock(): number {
    return this.details.blockSizes?.minimum ?? 1;
  }

  /** Whether the server announced `flag` (an NBD_FLAG bit). */
  can(flag: number): boolean {
    return (this.details.flags & flag) !== 0;
  }

  /** Read `length` bytes at `offset`. */
  async read(offset: number, length: number): Promise<Uint8Array> {
    const data = new Uint8Array(length);
    await this.readInto(offset, data);
    return data;
  }

  /** Fill `into` with the bytes at `offset`. */
  async readInto(offset: number, into: Uint8Array): Promise<void> {
    this.#checkRange(offset, into.length);
    await Promise.all(
      pieces(offset, into.length, this.maxPayload).map(([at, length]) =>
        this.#pick().read(at, into.subarray(at - offset, at - offset + length))
      ),
    );
  }

  /** Write `data` at `offset`. */
  async write(offset: number, data: Uint8Array, options: RequestOptions = {}): Promise<void> {
    this.#checkWritable("write");
    this.#checkRange(offset, data.length);
    const flags = options.fua ? NBD_CMD_FLAG.FUA : 0;
    await Promise.all(
      pieces(offset, data.length, this.maxPayload).map(([at, length]) =>
        this.#pick().write(at, data.subarray(at - offset, at - offset + length), flags)
      ),
    );
  }

  /** Make `length` bytes at `offset` read as zeroes. */
  async zero(offset: number, length: number, options: ZeroRequestOptions = {}): Promise<void> {
    this.#checkWritable("zero");
    this.#require(NBD_FLAG.SEND_WRITE_ZEROES, "zero");
    if (options.fastZero) this.#require(NBD_FLAG.SEND_FAST_ZERO, "fast zero");
    const flags = (options.fua ? NBD_CMD_FLAG.FUA : 0) |
      (options.noHole ? NBD_CMD_FLAG.NO_HOLE : 0) | (options.fastZero ? NBD_CMD_FLAG.FAST_ZERO : 0);
    await this.#effect(NBD_CMD.WRITE_ZEROES, offset, length, flags);
  }

  /** Tell the server `length` bytes at `offset` are no longer needed. */
  async trim(offset: number, length: number, options: RequestOptions = {}): Promise<void> {
    this.#checkWritable("trim");
    this.#require(NBD_FLAG.SEND_TRIM, "trim");
    await this.#effect(NBD_CMD.TRIM, offset, length, options.fua ? NBD_CMD_FLAG.FUA : 0);
  }

  /** Ask the server to prefetch `length` bytes at `offset`. */
  async cache(offset: number, length: number): Promise<void> {
    this.#require(NBD_FLAG.SEND_CACHE, "cache");
    await this.#effect(NBD_CMD.CACHE, offset, length, 0);
  }

  /** Make every completed write durable. */
  async flush(): Promise<void> {
    this.#require(NBD_FLAG.SEND_FLUSH, "flush");
    // With CAN_MULTI_CONN a flush covers every connection; without it there is one.
    await this.#connections[0].command(NBD_CMD.FLUSH, 0, 0);
  }

  /**
   * Block status from `offset` for one negotiated context (the first one by
   * default): at least one descriptor, covering at most `length` bytes
   * except that the last may reach beyond (none for a `length` of 0, which
   * is not sent to the server).
   */
  async blockStatus(
    offset: number,
    length: number,
    options: { context?: string; reqOne?: boolean } = {},
  ): Promise<StatusDescriptor[]> {
    const context = options.context ?? this.contexts[0];
    if (context === undefined || !this.contexts.includes(context)) {
      throw new DenbdError(
        "invalid",
        `metadata context '${context ?? BASE_ALLOCATION}' was not negotiated`,
      );
    }
    this.#checkRange(offset, length);
    if (length === 0) return [];
    const flags = options.reqOne ? NBD_CMD_FLAG.REQ_ONE : 0;
    const statuses = await this.#pick().blockStatus(
      offset,
      Math.min(length, this.maxStatusLength),
      flags,
    );
    return statuses.get(context)!;
  }

  /** End every connection cleanly (in-flight requests are answered first). */
  async disconnect(): Promise<void> {
    await Promise.all(this.#connections.map((connection) => connection.disconnect()));
  }

  /** The connection with the fewest requests in flight (round robin among equals). */
  #pick(): NbdClientConnection {
    let best = this.#connections[this.#next++ % this.#connections.length];
    for (const connection of this.#connections) {
      if (connection.inFlight < best.inFlight) best = connection;
    }
    return best;
  }

  async #effect(type: number, offset: number, length: number, flags: number): Promise<void> {
    this.#checkRange(offset, length);
    const step = Math.max(
      this.minimumBlock,
      MAX_EFFECT_LENGTH - (MAX_EFFECT_LENGTH % this.minimumBlock),
    );
    await Promise.all(
      pieces(offset, length, step).map(([at, size]) => this.#pick().command(type, at, size, flags)),
    );
  }

  #checkRange(offset: number, length: number): void {
    if (
      !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0
    ) {
      throw new DenbdError("invalid", `invalid range: ${length} bytes at ${offset}`);
    }
    if (offset + length > this.size) {
      throw new DenbdError(
        "invalid",
        `${length} bytes at ${offset} reach past the end (${this.size})`,
      );
    }
    const block = this.minimumBlock;
    if (offset % block || length % block) {
      throw new DenbdError(
        "invalid",
        `${length} bytes at ${offset} are not aligned to the server's ${block}-byte blocks`,
      );
    }
  }

  #checkWritable(what: string): void {
    if (this.can(NBD_FLAG.READ_ONLY)) {
      throw new DenbdError("read-only", `${what}: the export is read-only`);
    }
  }

  #require(flag: number, what: string): void {
    if (!this.can(flag)) {
      throw new DenbdError("not-supported", `${what}: the server does not support it`);
    }
  }
}

/**
 * [offset, length] pieces of at most `step` bytes covering `length` bytes at
 * `offset`; none for a length of 0 (the protocol says not to send those).
 */
function pieces(offset: number, length: number, step: number): [number, number][] {
  const result: [number, number][] = [];
  for (let done = 0; done < length; done += step) {
    result.push([offset + done, Math.min(step, length - done)]);
  }
  return result;
}

/**
 * How the connections of one client do TLS: the mode and, unless disabled,
 * the credentials (released by whoever loaded them).
 */
type TlsPlan =
  | { readonly mode: "disable"; readonly credentials?: undefined }
  | { readonly mode: "allow" | "require"; readonly credentials: TlsCredentials };

/** The TLS mode for `uri` and, unless disabled, the credentials it names. */
async function tlsPlan(uri: NbdUri, options: SessionOptions): Promise<TlsPlan> {
  const mode = tlsModeOf(uri, options.tls);
  if (mode === "disable") return { mode };
  return { mode, credentials: await loadClientCredentials(uri) };
}

/**
 * Open a connection and enter transmission on the export; the handshake is
 * bounded by `handshakeTimeoutMs`, later waits by the options' timeout.
 */
async function openConnection(
  uri: NbdUri,
  options: ConnectOptions,
  tls: TlsPlan,
  handshakeTimeoutMs: number,
): Promise<NbdClientConnection> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const { stream, session, reader, writer } = await startNegotiation(
    uri,
    tls,
    handshakeTimeoutMs,
  );
  try {
    const name = options.exportName ?? uri.exportName;
    const structured = options.structuredReplies === false
      ? false
      : await session.requestStructuredReplies();
    await options.beforeGo?.(session);
    if (options.metaContexts?.length && structured) {
      await session.setMetaContexts(name, options.metaContexts);
    }
    const details = await session.go(name);
    return new NbdClientConnection(
      stream,
      reader,
      writer,
      { details, structured, contexts: session.contexts, tls: session.tls },
      timeoutMs,
    );
  } catch (error) {
    stream.close();
    throw error;
  }
}

/**
 * Connect, read the greeting and, unless `tls` disables it, upgrade to TLS;
 * the stream returned is the one to use and close (the TLS session, if any).
 */
async function startNegotiation(uri: NbdUri, tls: TlsPlan, timeoutMs: number) {
  const connecting = connectTo(uri.address);
  let conn: Deno.Conn;
  try {
    conn = await within(
      { timeoutMs },
      connecting,
      `the connection to ${formatAddress(uri.address)}`,
    );
  } catch (error) {
    // A connection that completes after the timeout is closed, not leaked.
    connecting.then((late) => late.close(), () => {});
    throw error;
  }
  try {
    if ("setNoDelay" in conn) (conn as Deno.TcpConn).setNoDelay(true);
    const reader = new BufferedReader(conn, REPLY_BUFFER_SIZES);
    const writer = new WriteQueue(conn);
    const session = await NegotiationSession.start({ reader, writer, timeoutMs });
    const { mode, credentials } = tls;
    const secured = credentials === undefined ? null : await negotiateTls(
      session,
      mode,
      () => TlsSession.handshake(conn, credentials, { hostname: tlsHostnameOf(uri) }),
    );
    return { stream: secured ?? conn, session, reader, writer };
  } catch (error) {
    conn.close();
    throw error;
  }
}

async function connectTo(address: SocketAddress): Promise<Deno.Conn> {
  try {
    return address.type === "unix"
      ? await Deno.connect({ transport: "unix", path: address.path })
      : await Deno.connect({ hostname: address.host, port: address.port });
  } catch (error) {
    const where = address.type === "unix" ? address.path : `${address.host}:${address.port}`;
    throw new DenbdError("io", `could not connect to ${where}: ${(error as Error).message}`);
  }
}

/**
 * Run `body` with an option-mode session on the server of `uri` (nothing is
 * chosen for transmission; TLS first if the URI or `options` ask for it),
 * then end it with NBD_OPT_ABORT.
 */
export async function withNegotiation<T>(
  uri: string | NbdUri,
  body: (session: NegotiationSession, uri: NbdUri) => Promise<T>,
  options: SessionOptions = {},
): Promise<T> {
  const target = typeof uri === "string" ? parseNbdUri(uri) : uri;
  const tls = await tlsPlan(target, options);
  let stream: ByteStream;
  let session: NegotiationSession;
  try {
    ({ stream, session } = await startNegotiation(
      target,
      tls,
      options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    ));
  } finally {
    tls.credentials?.release();
  }
  try {
    const result = await body(session, target);
    await session.abort();
    return result;
  } finally {
    try {
      stream.close();
    } catch {
      // The server closed first.
    }
  }
}
