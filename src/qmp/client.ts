/**
 * A small QMP client: connects to a monitor socket (Unix or TCP), reads the
 * greeting, sends commands and hands back replies and events as they arrive.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { QmpClient } from "./client.ts";
 * // A monitor to talk to: one with the core commands only (denbd daemon's has them all).
 * import { CommandTable } from "./command.ts";
 * import { coreCommands } from "./core-commands.ts";
 * import { QmpServer } from "./monitor.ts";
 * const server = new QmpServer({
 *   commands: new CommandTable<undefined>(coreCommands()),
 *   state: undefined,
 *   requestQuit: () => {},
 * });
 * const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
 * const serving = server.serve(listener);
 *
 * const client = await QmpClient.connect({ hostname: "127.0.0.1", port: listener.addr.port });
 * await client.execute("qmp_capabilities");
 * const reply = await client.execute("query-version");
 * assert.match(String((reply.return as { package: string }).package), /^denbd /);
 * client.close();
 * await server.close();
 * await serving;
 * ```
 * @module
 */

import { writeAll } from "../io/byte-stream.ts";
import { type JsonStreamItem, JsonStreamParser, QEMU_JSON_LIMITS } from "./json-stream.ts";
import { formatJson, isJsonObject, type JsonObject } from "./json-value.ts";
import { dialTcp } from "../net/dial.ts";

/** A QMP connection to a server. */
export class QmpClient {
  readonly #conn: Deno.Conn;
  readonly #parser = new JsonStreamParser(QEMU_JSON_LIMITS);
  readonly #pending: JsonStreamItem[] = [];
  #greeting: JsonObject = {};
  #closed = false;

  private constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  /** The server's greeting (`{"QMP": {...}}`). */
  get greeting(): JsonObject {
    return this.#greeting;
  }

  /**
   * Connect to `address` (a host name's addresses each in turn, see
   * {@linkcode dialTcp}) and read the greeting.
   */
  static async connect(
    address: Deno.ConnectOptions | Deno.UnixConnectOptions,
  ): Promise<QmpClient> {
    return QmpClient.#open(
      "path" in address
        ? await Deno.connect(address)
        : await dialTcp(address.hostname ?? "127.0.0.1", address.port),
    );
  }

  /** Talk QMP over `conn`, already connected: read the greeting (the connection is closed if none comes). */
  static async #open(conn: Deno.Conn): Promise<QmpClient> {
    const client = new QmpClient(conn);
    try {
      const greeting = await client.receive();
      if (!greeting || !isJsonObject(greeting.QMP)) {
        throw new Error("the server sent no QMP greeting");
      }
      client.#greeting = greeting;
      return client;
    } catch (error) {
      conn.close();
      throw error;
    }
  }

  /**
   * The next message from the server (a reply or an event), or null once the
   * server closed the connection. Throws if the server sends something that
   * is not a JSON object.
   */
  async receive(): Promise<JsonObject | null> {
    const buffer = new Uint8Array(64 * 1024);
    while (this.#pending.length === 0) {
      const count = await this.#conn.read(buffer);
      if (count === null) return null;
      for (const item of this.#parser.feed(buffer.subarray(0, count))) this.#pending.push(item);
    }
    const item = this.#pending.shift()!;
    if (!("value" in item) || !isJsonObject(item.value)) {
      throw new Error(`the server sent an invalid message (${"error" in item ? item.error : ""})`);
    }
    return item.value;
  }

  /** Send `message` (an object, or text sent as is) followed by a line end. */
  async send(message: JsonObject | string): Promise<void> {
    const text = typeof message === "string"
      ? message
      : formatJson(message, { order: "insertion" });
    await writeAll(this.#conn, new TextEncoder().encode(text + "\n"));
  }

  /**
   * Run `command` with `args` and resolve to its reply (which has `return`
   * or `error`); events that arrive first are passed to `onEvent`.
   */
  async execute(
    command: string,
    args?: JsonObject,
    onEvent: (event: JsonObject) => void = () => {},
  ): Promise<JsonObject> {
    await this.send(args ? { execute: command, arguments: args } : { execute: command });
    for (;;) {
      const message = await this.receive();
      if (message === null) throw new Error("the server closed the connection");
      if ("return" in message || "error" in message) return message;
      onEvent(message);
    }
  }

  /** Close the connection (again: nothing). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#conn.close();
  }
}
