/**
 * One client connection: the handshake (bounded in time, TLS handshake
 * included), then the transmission phase, then closing. Whatever the client
 * sends, a connection ends by logging at most one line and closing its
 * socket (after TLS's close_notify when TLS was started); it never throws to
 * the server.
 *
 * @module
 */

import { BufferedReader, UnexpectedEof } from "../../io/buffered-reader.ts";
import { WriteQueue } from "../../io/write-queue.ts";
import { DenbdError, messageOf } from "../../errors.ts";
import { type Logger, quoted } from "../../log.ts";
import { formatPeer } from "../../net/socket-address.ts";
import type { ExportCatalog, NbdExport } from "./export.ts";
import { flagNames, NBD_FLAG } from "../protocol.ts";
import { negotiate, type NegotiatedSession } from "./handshake.ts";
import { DEFAULT_TRANSMISSION_LIMITS, Transmission } from "./transmission.ts";
import { RequestCounters } from "./stats.ts";
import type { ByteStream } from "../../io/byte-stream.ts";
import type { TlsCredentials } from "../../tls/credentials.ts";
import { type TlsPeer, TlsSession } from "../../tls/session.ts";

/** TLS on the server side; when set, clients must start TLS (as qemu-nbd and qsd). */
export interface ServerTls {
  /** Server credentials; when set, TLS is required (as qemu-nbd and qsd). */
  readonly credentials: TlsCredentials;
  /** Called after the handshake with the peer; resolves null to allow, or the refusal to log. */
  readonly authorize?: (peer: TlsPeer) => string | null;
}

/**
 * Seconds a client has to finish option haggling unless told otherwise
 * (QEMU's default since the fix for CVE-2024-7409).
 */
export const DEFAULT_HANDSHAKE_LIMIT_SECONDS = 10;

/**
 * How long a stopping connection still answers requests (with ESHUTDOWN)
 * once those in flight are answered, unless the client leaves first: those
 * the client sent before it learnt of the stop may still be on their way.
 */
export const SHUTDOWN_LINGER_MS = 1_000;

/** The longest delay a timer takes at once (2^31 - 1 ms); longer deadlines are re-armed. */
const MAX_TIMER_DELAY_MS = 0x7fff_ffff;

/** What a connection needs besides its socket. */
export interface NbdConnectionOptions {
  /** Where exports are looked up. */
  readonly catalog: ExportCatalog;
  /** Diagnostics; the connection's lines name its client. */
  readonly log: Logger;
  /** The client's number, unique within its server (Unix clients have no address to tell them apart). */
  readonly id: number;
  /**
   * Milliseconds a client has to finish the handshake, 0 for no limit
   * ({@linkcode DEFAULT_HANDSHAKE_LIMIT_SECONDS} if absent).
   */
  readonly handshakeLimitMs?: number;
  /** When set, the client must start TLS and pass its authorization. */
  readonly tls?: ServerTls;
}

/** A client connection and its lifecycle. */
export class NbdConnection {
  /** The client's address, for messages. */
  readonly peer: string;
  /** The client's number, unique within its server. */
  readonly id: number;
  /** When the client connected (milliseconds since the epoch). */
  readonly connectedAt: number = Date.now();
  /** What the client's requests have been served, counted. */
  readonly counters: RequestCounters = new RequestCounters();
  readonly #conn: Deno.Conn;
  readonly #catalog: ExportCatalog;
  /** The client's logger; once an export is chosen, its records name it too. */
  #log: Logger;
  readonly #handshakeLimitMs: number;
  readonly #tls: ServerTls | undefined;
  /** The TLS session once STARTTLS succeeded; closing it closes the socket too. */
  #session: TlsSession | null = null;
  #transmission: Transmission | null = null;
  #export: NbdExport | null = null;
  #closed = false;
  readonly #closing = Promise.withResolvers<void>();
  #closeReason: string | null = null;

  /**
   * Serve `conn` with the exports of `options.catalog`; a client that has
   * not finished the handshake within `options.handshakeLimitMs` is dropped.
   * With `options.tls`, the client must start TLS and pass its authorization.
   */
  constructor(conn: Deno.Conn, options: NbdConnectionOptions) {
    this.#conn = conn;
    this.#tls = options.tls;
    this.#catalog = options.catalog;
    this.id = options.id;
    this.peer = formatPeer(conn.remoteAddr);
    this.#log = options.log.child({ client: this.id, peer: this.peer });
    this.#handshakeLimitMs = options.handshakeLimitMs ?? DEFAULT_HANDSHAKE_LIMIT_SECONDS * 1000;
    if ("setNoDelay" in conn) (conn as Deno.TcpConn).setNoDelay(true);
  }

  /** The export this client is using, once the handshake chose one. */
  get export(): NbdExport | null {
    return this.#export;
  }

  /** Run the connection to its end. Never throws. */
  async run(): Promise<void> {
    this.#log.debug("connected");
    const reader = new BufferedReader(this.#conn);
    const writer = new WriteQueue(this.#conn);
    const deadline = this.#handshakeLimitMs > 0
      ? new Deadline(
        this.#handshakeLimitMs,
        () => this.#close(`handshake not finished within ${this.#handshakeLimitMs / 1000}s`),
      )
      : null;
    try {
      const tls = this.#tls;
      const session = await negotiate({ reader, writer }, this.#catalog, {
        tls: tls && { start: () => this.#startTls(tls) },
        log: this.#log,
      });
      deadline?.cancel();
      if (!session || this.#closed) return;
      this.#export = session.export;
      this.#log = this.#log.child({ export: session.export.name });
      if (this.#log.enabled("debug")) this.#log.debug(describeSession(session));
      this.#transmission = new Transmission(
        reader,
        writer,
        session,
        this.#log,
        DEFAULT_TRANSMISSION_LIMITS,
        this.counters,
      );
      await this.#transmission.run();
    } catch (error) {
      if (!this.#closed) this.#log.warn(`closing connection: ${describeFailure(error)}`);
    } finally {
      deadline?.cancel();
      if (this.#closeReason) this.#log.warn(`closing connection: ${this.#closeReason}`);
      this.#close(null);
      const counted = this.counters;
      this.#log.debug(
        `disconnected after ${(Date.now() - this.connectedAt) / 1000}s: ` +
          `${counted.readOperations} reads, ${counted.writeOperations} writes, ` +
          `${counted.failedOperations} failed`,
      );
    }
  }

  /**
   * The TLS handshake over the socket, then the peer's authorization;
   * resolves to the session to carry on over, or rejects saying why the
   * client is dropped. A handshake the deadline cut short rejects too.
   */
  async #startTls(tls: ServerTls): Promise<ByteStream> {
    const session = await TlsSession.handshake(this.#conn, tls.credentials);
    if (this.#closed) {
      session.close();
      throw new DenbdError("shutdown", "connection closed during the TLS handshake");
    }
    this.#session = session;
    const refusal = tls.authorize?.(session.peer) ?? null;
    if (refusal !== null) throw new DenbdError("invalid", refusal);
    this.#log.debug(
      `TLS started: ${session.description}` +
        (session.peer.identity === null ? "" : `, client ${quoted(session.peer.identity)}`),
    );
    return session;
  }

  /**
   * End the connection gracefully: new requests get ESHUTDOWN, requests in
   * flight are answered, then the socket is closed once the client has left
   * or {@linkcode SHUTDOWN_LINGER_MS} has passed without it leaving.
   */
  async shutdown(): Promise<void> {
    const transmission = this.#transmission;
    if (transmission) {
      await transmission.stop();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const linger = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, SHUTDOWN_LINGER_MS);
      });
      await Promise.race([this.#closing.promise, linger]);
      clearTimeout(timer);
      await transmission.settled();
    }
    this.#close(null);
  }

  /**
   * Drop the client now, saying `why` (with -v): the socket is closed,
   * requests in flight still finish on the storage but get no reply.
   */
  abort(why: string): void {
    this.#log.debug(`dropping client: ${why}`);
    this.#close(null);
  }

  /** Close the socket now; `reason` (if any) is logged once. */
  #close(reason: string | null): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closing.resolve();
    this.#closeReason = reason;
    if (this.#session) {
      this.#session.close(); // close_notify (best effort), then the socket
      return;
    }
    try {
      this.#conn.close();
    } catch {
      // Already closed by the peer's side of the runtime.
    }
  }
}

/** Calls a function once `ms` have passed, however long that is, unless cancelled first. */
class Deadline {
  readonly #at: number;
  readonly #expire: () => void;
  #timer: ReturnType<typeof setTimeout>;

  constructor(ms: number, expire: () => void) {
    this.#at = Date.now() + ms;
    this.#expire = expire;
    this.#timer = this.#arm();
  }

  /** Never call the function. */
  cancel(): void {
    clearTimeout(this.#timer);
  }

  #arm(): ReturnType<typeof setTimeout> {
    const left = this.#at - Date.now();
    return setTimeout(() => {
      if (Date.now() >= this.#at) this.#expire();
      else this.#timer = this.#arm();
    }, Math.min(Math.max(left, 0), MAX_TIMER_DELAY_MS));
  }
}

/** What a client chose: its export, the transmission flags, structured replies, contexts. */
function describeSession(session: NegotiatedSession): string {
  return `using export ${quoted(session.export.name)}, flags ${
    flagNames(NBD_FLAG, session.flags)
  }` +
    (session.structured ? ", structured replies" : "") +
    session.contexts.map(({ context }) => `, ${context.name}`).join("");
}

/** A one-line account of why a connection failed. */
function describeFailure(error: unknown): string {
  if (error instanceof UnexpectedEof) return `client disconnected mid-message (${error.message})`;
  if (error instanceof Deno.errors.ConnectionReset) return "connection reset by client";
  if (error instanceof Deno.errors.BrokenPipe) return "client stopped reading";
  return messageOf(error);
}
