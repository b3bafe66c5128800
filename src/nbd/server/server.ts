/**
 * The NBD server: accepts clients on any number of listeners, up to a
 * connection limit (further clients wait in the listen backlog, as with
 * QEMU), and serves each one in its own {@linkcode NbdConnection}, which
 * drops a client that has not finished its handshake within the handshake
 * limit. When accepting fails (out of file descriptors), the server retries
 * with a growing pause and says so once, not once per attempt. Closing is
 * graceful within a bounded time.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { NbdServer } from "./server.ts";
 * import { ExportTable, NbdExport } from "./export.ts";
 * import { MemoryNode } from "../../block/memory.ts";
 * import { NbdClient } from "../client/client.ts";
 * import { Logger } from "../../log.ts";
 * const catalog = new ExportTable();
 * catalog.add(new NbdExport({ name: "disk", node: new MemoryNode(1 << 20) }));
 * const server = new NbdServer({ catalog, log: new Logger() });
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * server.listen(listener);
 * const client = await NbdClient.connect(`nbd://127.0.0.1:${listener.addr.port}/disk`);
 * assert.equal(client.size, 1 << 20);
 * await client.disconnect();
 * await server.close();
 * ```
 * @module
 */

import type { Logger } from "../../log.ts";
import { messageOf } from "../../errors.ts";
import { DEFAULT_HANDSHAKE_LIMIT_SECONDS, NbdConnection, type ServerTls } from "./connection.ts";
import type { ExportCatalog, NbdExport } from "./export.ts";
import { type ExportTotal, ExportTotals } from "./stats.ts";

/**
 * Clients served at once unless told otherwise: QEMU's default since the
 * fix for CVE-2024-7409, enough for a multi-connection client such as
 * nbdcopy.
 */
export const DEFAULT_MAX_CONNECTIONS = 100;

/** How long {@linkcode NbdServer.close} lets clients' requests in flight finish before dropping them. */
export const GRACEFUL_CLOSE_LIMIT_MS = 5_000;

/** The first pause after a failed accept; it doubles with each failure in a row, up to the maximum. */
const ACCEPT_RETRY_FIRST_MS = 10;
/** The longest pause between two attempts to accept. */
const ACCEPT_RETRY_MAX_MS = 1_000;
/** Failures to accept are reported at most this often. */
const ACCEPT_FAILURE_REPORT_INTERVAL_MS = 60_000;

/** How the server behaves. */
export interface NbdServerOptions {
  /** Where exports are looked up. */
  readonly catalog: ExportCatalog;
  /** Diagnostics. */
  readonly log: Logger;
  /** Clients served at once, 0 for no limit ({@linkcode DEFAULT_MAX_CONNECTIONS} if absent). */
  readonly maxConnections?: number;
  /**
   * Seconds a client has to finish its handshake, 0 for no limit
   * ({@linkcode DEFAULT_HANDSHAKE_LIMIT_SECONDS} if absent).
   */
  readonly handshakeLimitSeconds?: number;
  /** Called after a client's connection has ended, with the number still open. */
  readonly onDisconnect?: (remaining: number) => void;
  /** TLS credentials and authorization; when set, every client must use TLS. */
  readonly tls?: ServerTls;
}

/** An NBD server over one or more listeners. */
export class NbdServer {
  readonly #options: NbdServerOptions;
  readonly #listeners = new Set<Deno.Listener>();
  /** Open connections, each with the promise of its end. */
  readonly #connections = new Map<NbdConnection, Promise<void>>();
  readonly #running = new Set<Promise<void>>();
  #slotWaiters: (() => void)[] = [];
  #closing = false;
  /** Failures to accept since the last report, and when that was. */
  #acceptFailures = { unreported: 0, reportedAt: -Infinity };
  /** The number of the last client accepted; each gets the next. */
  #lastClientId = 0;
  /** Per-export counts of the clients that left. */
  readonly #totals = new ExportTotals();

  /** A server with `options`; it accepts nothing until {@linkcode listen}. */
  constructor(options: NbdServerOptions) {
    this.#options = options;
  }

  /** Accept clients from `listener` until the server closes. */
  listen(listener: Deno.Listener): void {
    this.#listeners.add(listener);
    this.#track(this.#acceptLoop(listener));
  }

  /**
   * Stop accepting, end every connection gracefully (clients still in the
   * handshake are closed at once; requests in flight are answered, later
   * ones get ESHUTDOWN), and wait until all are closed. Clients whose
   * requests are not all answered within `limitMs` (slow storage, a client
   * that does not read its replies) are dropped then; requests still
   * running on the storage are waited for.
   */
  async close(limitMs = GRACEFUL_CLOSE_LIMIT_MS): Promise<void> {
    this.#closing = true;
    for (const listener of this.#listeners) listener.close();
    this.#listeners.clear();
    this.#wakeSlotWaiters();
    const connections = [...this.#connections.keys()];
    const timer = setTimeout(() => {
      for (const connection of connections) {
        connection.abort(`requests in flight not finished within ${limitMs / 1000}s of the stop`);
      }
    }, limitMs);
    try {
      await Promise.all(connections.map((connection) => connection.shutdown()));
    } finally {
      clearTimeout(timer);
    }
    while (this.#running.size) await Promise.all([...this.#running]);
  }

  /** The clients connected right now, in the order they came. */
  clients(): NbdConnection[] {
    return [...this.#connections.keys()];
  }

  /** What `entry` has served to its clients, present and past. */
  totalsOf(entry: NbdExport): ExportTotal {
    const present = this.clients().filter((connection) => connection.export === entry);
    return this.#totals.of(entry, present.map((connection) => connection.counters));
  }

  /** How many clients are using `entry` right now. */
  clientsOf(entry: NbdExport): number {
    return this.clients().filter((connection) => connection.export === entry).length;
  }

  /** Drop every client using `entry` at once; resolves when their connections are closed. */
  async dropClients(entry: NbdExport): Promise<void> {
    const ending: Promise<void>[] = [];
    for (const [connection, ended] of this.#connections) {
      if (connection.export !== entry) continue;
      connection.abort("its export is being removed");
      ending.push(ended);
    }
    await Promise.all(ending);
  }

  /**
   * Accept clients while there is room. A run of failures (EMFILE: out of
   * file descriptors) is retried after pauses that double up to a second,
   * cut short when a client leaves; failures are reported at most once a
   * minute.
   */
  async #acceptLoop(listener: Deno.Listener): Promise<void> {
    let failures = 0;
    while (!this.#closing) {
      await this.#waitForSlot();
      if (this.#closing) return;
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (this.#closing || error instanceof Deno.errors.BadResource) return;
        this.#reportAcceptFailure(error);
        failures++;
        await this.#pause(
          Math.min(ACCEPT_RETRY_FIRST_MS * 2 ** (failures - 1), ACCEPT_RETRY_MAX_MS),
        );
        continue;
      }
      if (this.#closing) {
        conn.close();
        return;
      }
      failures = 0;
      this.#serve(conn);
    }
  }

  /** Count a failure to accept; report it unless one was reported less than a minute ago. */
  #reportAcceptFailure(error: unknown): void {
    const failures = this.#acceptFailures;
    failures.unreported++;
    const now = performance.now();
    if (now - failures.reportedAt < ACCEPT_FAILURE_REPORT_INTERVAL_MS) return;
    const count = failures.unreported > 1
      ? ` ${failures.unreported} times since the last report`
      : "";
    this.#options.log.warn(
      `accept failed${count}: ${messageOf(error)}; retrying with pauses of up to ` +
        `${ACCEPT_RETRY_MAX_MS / 1000}s, reporting at most once a minute`,
    );
    failures.unreported = 0;
    failures.reportedAt = now;
  }

  /** Resolves after `ms`, or sooner when a client leaves or the server closes. */
  #pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.#slotWaiters = this.#slotWaiters.filter((waiter) => waiter !== wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.#slotWaiters.push(wake);
    });
  }

  #serve(conn: Deno.Conn): void {
    const connection = new NbdConnection(conn, {
      catalog: this.#options.catalog,
      log: this.#options.log,
      id: ++this.#lastClientId,
      handshakeLimitMs: (this.#options.handshakeLimitSeconds ?? DEFAULT_HANDSHAKE_LIMIT_SECONDS) *
        1000,
      tls: this.#options.tls,
    });
    const ended = connection.run().finally(() => {
      this.#connections.delete(connection);
      if (connection.export) this.#totals.fold(connection.export, connection.counters);
      this.#wakeSlotWaiters();
      this.#options.onDisconnect?.(this.#connections.size);
    });
    this.#connections.set(connection, ended);
    this.#track(ended);
  }

  /** Wait while the connection limit is reached. */
  async #waitForSlot(): Promise<void> {
    const limit = this.#options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    while (!this.#closing && limit > 0 && this.#connections.size >= limit) {
      await new Promise<void>((resolve) => this.#slotWaiters.push(resolve));
    }
  }

  #wakeSlotWaiters(): void {
    const waiters = this.#slotWaiters;
    this.#slotWaiters = [];
    for (const wake of waiters) wake();
  }

  #track(task: Promise<void>): void {
    this.#running.add(task);
    task.finally(() => this.#running.delete(task));
  }
}
