/**
 * One client connection: the handshake (bounded in time), then the
 * transmission phase, then closing. Whatever the client sends, a connection
 * ends by logging at most one line and closing its socket; it never throws
 * to the server.
 *
 * @module
 */

import { BufferedReader, UnexpectedEof } from "../../io/buffered-reader.ts";
import { WriteQueue } from "../../io/write-queue.ts";
import { messageOf } from "../../errors.ts";
import type { Logger } from "../../log.ts";
import { formatPeer } from "../../net/socket-address.ts";
import type { ExportCatalog, NbdExport } from "./export.ts";
import { flagNames, NBD_FLAG } from "../protocol.ts";
import { negotiate } from "./handshake.ts";
import { Transmission } from "./transmission.ts";

/** Time a client has to finish option haggling. */
export const HANDSHAKE_TIMEOUT_MS = 10_000;

/** A client connection and its lifecycle. */
export class NbdConnection {
  /** The client's address, for messages. */
  readonly peer: string;
  readonly #conn: Deno.Conn;
  readonly #catalog: ExportCatalog;
  readonly #log: Logger;
  readonly #handshakeTimeoutMs: number;
  #transmission: Transmission | null = null;
  #export: NbdExport | null = null;
  #closed = false;
  #closeReason: string | null = null;

  /** Serve `conn` with the exports of `catalog`. */
  constructor(
    conn: Deno.Conn,
    catalog: ExportCatalog,
    log: Logger,
    handshakeTimeoutMs = HANDSHAKE_TIMEOUT_MS,
  ) {
    this.#conn = conn;
    this.#catalog = catalog;
    this.peer = formatPeer(conn.remoteAddr);
    this.#log = log.child(this.peer);
    this.#handshakeTimeoutMs = handshakeTimeoutMs;
    if ("setNoDelay" in conn) (conn as Deno.TcpConn).setNoDelay(true);
  }

  /** The export this client is using, once the handshake chose one. */
  get export(): NbdExport | null {
    return this.#export;
  }

  /** Run the connection to its end. Never throws. */
  async run(): Promise<void> {
    const reader = new BufferedReader(this.#conn);
    const writer = new WriteQueue(this.#conn);
    const timer = setTimeout(
      () => this.#close(`handshake not finished within ${this.#handshakeTimeoutMs / 1000}s`),
      this.#handshakeTimeoutMs,
    );
    try {
      const session = await negotiate({ reader, writer }, this.#catalog);
      clearTimeout(timer);
      if (!session || this.#closed) return;
      this.#export = session.export;
      this.#log.debug(
        `using export '${session.export.name}', flags ${flagNames(NBD_FLAG, session.flags)}` +
          (session.structured ? ", structured replies" : "") +
          session.contexts.map(({ context }) => `, ${context.name}`).join(""),
      );
      this.#transmission = new Transmission(reader, writer, session, this.#log);
      await this.#transmission.run();
    } catch (error) {
      if (!this.#closed) this.#log.warn(`closing connection: ${describeFailure(error)}`);
    } finally {
      clearTimeout(timer);
      if (this.#closeReason) this.#log.warn(`closing connection: ${this.#closeReason}`);
      this.#close(null);
    }
  }

  /**
   * End the connection gracefully: new requests get ESHUTDOWN, requests in
   * flight are answered, then the socket is closed.
   */
  async shutdown(): Promise<void> {
    await this.#transmission?.stop();
    this.#close(null);
  }

  /**
   * Drop the client now (hard removal of its export): the socket is closed,
   * requests in flight still finish on the storage but get no reply.
   */
  abort(): void {
    this.#log.debug("dropping client: its export is being removed");
    this.#close(null);
  }

  /** Close the socket now; `reason` (if any) is logged once. */
  #close(reason: string | null): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closeReason = reason;
    try {
      this.#conn.close();
    } catch {
      // Already closed by the peer's side of the runtime.
    }
  }
}

/** A one-line account of why a connection failed. */
function describeFailure(error: unknown): string {
  if (error instanceof UnexpectedEof) return `client disconnected mid-message (${error.message})`;
  if (error instanceof Deno.errors.ConnectionReset) return "connection reset by client";
  if (error instanceof Deno.errors.BrokenPipe) return "client stopped reading";
  return messageOf(error);
}
