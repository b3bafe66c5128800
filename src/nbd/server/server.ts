/**
 * The NBD server: accepts clients on any number of listeners, up to a
 * connection limit (further clients wait in the listen backlog, as with
 * qemu-nbd), and serves each one in its own {@linkcode NbdConnection}.
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
import { NbdConnection } from "./connection.ts";
import type { ExportCatalog, NbdExport } from "./export.ts";

/** How the server behaves. */
export interface NbdServerOptions {
  /** Where exports are looked up. */
  readonly catalog: ExportCatalog;
  /** Diagnostics. */
  readonly log: Logger;
  /** Clients served at once; 0 means no limit. */
  readonly maxConnections?: number;
  /** Called after a client's connection has ended, with the number still open. */
  readonly onDisconnect?: (remaining: number) => void;
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
   * Stop accepting, end every connection gracefully (requests in flight are
   * answered, later ones get ESHUTDOWN), and wait until all are closed.
   */
  async close(): Promise<void> {
    this.#closing = true;
    for (const listener of this.#listeners) listener.close();
    this.#listeners.clear();
    this.#wakeSlotWaiters();
    await Promise.all([...this.#connections.keys()].map((connection) => connection.shutdown()));
    while (this.#running.size) await Promise.all([...this.#running]);
  }

  /** How many clients are using `entry` right now. */
  clientsOf(entry: NbdExport): number {
    return [...this.#connections.keys()].filter((connection) => connection.export === entry).length;
  }

  /** Drop every client using `entry` at once; resolves when their connections are closed. */
  async dropClients(entry: NbdExport): Promise<void> {
    const ending: Promise<void>[] = [];
    for (const [connection, ended] of this.#connections) {
      if (connection.export !== entry) continue;
      connection.abort();
      ending.push(ended);
    }
    await Promise.all(ending);
  }

  async #acceptLoop(listener: Deno.Listener): Promise<void> {
    while (!this.#closing) {
      await this.#waitForSlot();
      if (this.#closing) return;
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (this.#closing || error instanceof Deno.errors.BadResource) return;
        this.#options.log.warn(`accept failed: ${messageOf(error)}`);
        continue;
      }
      this.#serve(conn);
    }
  }

  #serve(conn: Deno.Conn): void {
    const connection = new NbdConnection(conn, this.#options.catalog, this.#options.log);
    this.#options.log.debug(`${connection.peer}: connected`);
    const ended = connection.run().finally(() => {
      this.#connections.delete(connection);
      this.#options.log.debug(`${connection.peer}: disconnected`);
      this.#wakeSlotWaiters();
      this.#options.onDisconnect?.(this.#connections.size);
    });
    this.#connections.set(connection, ended);
    this.#track(ended);
  }

  /** Wait while the connection limit is reached. */
  async #waitForSlot(): Promise<void> {
    const limit = this.#options.maxConnections ?? 0;
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
