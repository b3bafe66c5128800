/**
 * QMP monitors: one session per connection, behaving as qemu-storage-daemon
 * 7.2's do, and a server that gives each accepted connection its own.
 *
 * A session sends the greeting, then reads JSON values (see json-stream.ts)
 * and answers each in order, one at a time: a parse error, a request that is
 * not an object or has bad members, an unknown command, invalid arguments or
 * a failing command get an error reply; every reply echoes the request's
 * `id`. Until `qmp_capabilities` succeeds only that command exists (others
 * get CommandNotFound "Expecting capabilities negotiation with
 * 'qmp_capabilities'"); afterwards events from the EventBus (events.ts) are
 * delivered too. Replies and events are single lines ending in "\r\n", formatted as
 * QEMU formats them. A session that sends garbage, floods or disconnects
 * affects only itself: input is read only while fewer than 8 requests wait
 * and less than 256 KiB of replies and events wait to be written (so a peer
 * that never reads its replies holds at most that plus one reply), a command
 * in progress when the peer leaves runs to its end, and a peer that stops
 * reading while events pile up is disconnected.
 *
 * @example
 * ```ts
 * import { QmpServer } from "./monitor.ts";
 * import { CommandTable } from "./command.ts";
 * import { coreCommands } from "./core-commands.ts";
 * const server = new QmpServer({
 *   commands: new CommandTable<null>(coreCommands()),
 *   state: null,
 *   requestQuit: () => server.close(),
 * });
 * const serving = server.serve(Deno.listen({ hostname: "127.0.0.1", port: 0 }));
 * // ... clients connect, until `quit` or:
 * await server.close();
 * await serving;
 * ```
 * @module
 */

import type { ByteStream } from "../io/byte-stream.ts";
import { WriteQueue } from "../io/write-queue.ts";
import {
  type CommandContext,
  type CommandTable,
  errorReply,
  type QmpCommand,
  QmpError,
  runCommand,
} from "./command.ts";
import { VERSION_INFO } from "./core-commands.ts";
import type { EventBus, QmpEvent } from "./events.ts";
import { type JsonStreamItem, type JsonStreamLimits, JsonStreamParser } from "./json-stream.ts";
import { formatJson, isJsonObject, type JsonObject, qdictKeys } from "./json-value.ts";

/** What a monitor serves. */
export interface MonitorOptions<S> {
  /** The commands (only those marked `beforeNegotiation` until negotiation is done). */
  readonly commands: CommandTable<S>;
  /** The state commands act on. */
  readonly state: S;
  /** Called when a command (quit) asks for the daemon to end. */
  readonly requestQuit: () => void;
  /** Events to deliver once capabilities are negotiated. */
  readonly events?: EventBus;
  /** Bounds on one JSON value (default: DEFAULT_JSON_LIMITS). */
  readonly limits?: Partial<JsonStreamLimits>;
  /** Indent replies and events by 4 spaces per level, one member per line (--monitor pretty=on). */
  readonly pretty?: boolean;
}

/** Capabilities offered in the greeting (qemu-storage-daemon offers OOB). */
const OFFERED_CAPABILITIES = ["oob"];
/** Requests read ahead of the one running; reading pauses beyond this (QEMU's queue length). */
const MAX_QUEUED_REQUESTS = 8;
/**
 * Bytes of replies and events handed to the writer and not yet written
 * beyond which no further request is read or answered until they are.
 */
const MAX_UNSENT_BYTES = 256 * 1024;
/** Events waiting to be written before a peer that does not read is disconnected. */
const MAX_PENDING_EVENTS = 1024;
/** How long {@linkcode QmpMonitor.close} waits for a running command's reply to be written. */
const CLOSE_GRACE_MS = 5000;
const READ_SIZE = 64 * 1024;
/** Input is parsed this much at a time, so one read of garbage queues at most this many errors. */
const PARSE_SLICE = 4 * 1024;
const encoder = new TextEncoder();

/** A failure of the request's framing, replied as GenericError. */
function badRequest(message: string): never {
  throw new QmpError("GenericError", message);
}

/** One QMP session over a byte stream. */
export class QmpMonitor<S> {
  readonly #stream: ByteStream;
  readonly #options: MonitorOptions<S>;
  readonly #writer: WriteQueue;
  readonly #parser: JsonStreamParser;
  readonly #context: CommandContext<S>;
  /** Input read and not yet answered: `#queue` from index `#head` on. */
  #queue: JsonStreamItem[] = [];
  #head = 0;
  /** Loops waiting for a change (input read, request taken, output written, closing). */
  #waiters: (() => void)[] = [];
  #readDone = false;
  #negotiated = false;
  #oob = false;
  #busy = false;
  #closing = false;
  #closed = false;
  #pendingEvents = 0;
  /** Bytes handed to the writer and not yet written. */
  #unsentBytes = 0;
  #graceTimer: ReturnType<typeof setTimeout> | undefined;
  #unsubscribe: (() => void) | null = null;

  /** A session on `stream` (a connected socket). */
  constructor(stream: ByteStream, options: MonitorOptions<S>) {
    this.#stream = stream;
    this.#options = options;
    this.#writer = new WriteQueue(stream);
    this.#parser = new JsonStreamParser(options.limits);
    const negotiated = () => this.#negotiated;
    this.#context = {
      state: options.state,
      commands: options.commands,
      session: {
        get negotiated() {
          return negotiated();
        },
        completeNegotiation: (capabilities) => this.#completeNegotiation(capabilities),
      },
      requestQuit: () => {
        this.#closing = true;
        options.requestQuit();
      },
    };
  }

  /**
   * Serve the session until the peer disconnects or {@linkcode close} is
   * called; resolves once the stream is closed. Never rejects.
   */
  async run(): Promise<void> {
    let reading: Promise<void> | undefined;
    try {
      await this.#send({ QMP: { version: VERSION_INFO, capabilities: OFFERED_CAPABILITIES } });
      reading = this.#readLoop();
      await this.#processLoop();
    } catch {
      // The peer went away while we wrote to it.
    } finally {
      this.#unsubscribe?.();
      this.#hangUp();
      await reading;
    }
  }

  /**
   * End the session: at once if no command is running, else once the
   * running command's reply is written (or after a grace period, if the peer
   * does not read it). Requests not yet started are dropped.
   */
  close(): void {
    this.#closing = true;
    if (!this.#busy) this.#hangUp();
    else this.#graceTimer ??= setTimeout(() => this.#hangUp(), CLOSE_GRACE_MS);
    this.#wakeUp();
  }

  #hangUp(): void {
    clearTimeout(this.#graceTimer);
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#stream.close();
    } catch {
      // Already closed by the peer's side.
    }
    this.#wakeUp();
  }

  #wakeUp(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }

  #waitForWake(): Promise<void> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  async #readLoop(): Promise<void> {
    const buffer = new Uint8Array(READ_SIZE);
    try {
      while (!this.#closed) {
        const count = await this.#stream.read(buffer);
        if (count === null) break;
        for (let start = 0; start < count && !this.#closed; start += PARSE_SLICE) {
          while (this.#saturated() && !this.#closed) await this.#waitForWake();
          const items = this.#parser.feed(
            buffer.subarray(start, Math.min(count, start + PARSE_SLICE)),
          );
          this.#queue = this.#queue.slice(this.#head).concat(items);
          this.#head = 0;
          this.#wakeUp();
        }
        while (this.#saturated() && !this.#closed) await this.#waitForWake();
      }
    } catch {
      // A reset connection, or the stream closed under a pending read: both end the input.
    }
    this.#readDone = true;
    this.#wakeUp();
  }

  /** Whether input must wait: enough requests queued, or enough output unwritten. */
  #saturated(): boolean {
    return this.#queue.length - this.#head >= MAX_QUEUED_REQUESTS ||
      this.#unsentBytes > MAX_UNSENT_BYTES;
  }

  async #processLoop(): Promise<void> {
    while (!this.#closing && !this.#closed) {
      const item = this.#queue[this.#head];
      if (item !== undefined) this.#head++;
      if (item === undefined) {
        if (this.#readDone) return;
        await this.#waitForWake();
        continue;
      }
      this.#wakeUp();
      this.#busy = true;
      try {
        const sending = this.#send(await this.#answer(item));
        // Replies to a burst of input are written in batches, up to MAX_UNSENT_BYTES at a time.
        if (this.#head === this.#queue.length || this.#unsentBytes > MAX_UNSENT_BYTES) {
          await sending;
        }
      } finally {
        this.#busy = false;
      }
    }
  }

  /** The reply to one item of input. */
  async #answer(item: JsonStreamItem): Promise<Record<string, unknown>> {
    if ("error" in item) return { error: { class: "GenericError", desc: item.error } };
    const request = item.value;
    if (!isJsonObject(request)) {
      return { error: { class: "GenericError", desc: "QMP input must be a JSON object" } };
    }
    const id = Object.hasOwn(request, "id") ? { id: request.id } : {};
    try {
      return { return: await this.#dispatch(request), ...id };
    } catch (error) {
      const reply = errorReply(error);
      if (!this.#negotiated && reply.class === "CommandNotFound") {
        reply.desc = "Expecting capabilities negotiation with 'qmp_capabilities'";
      }
      return { error: reply, ...id };
    }
  }

  /** Check the request's members as QEMU does (in its dictionary order), then run the command. */
  #dispatch(request: JsonObject): Promise<unknown> {
    for (const key of qdictKeys(request)) {
      const value = request[key];
      if (key === "execute" || (key === "exec-oob" && this.#oob)) {
        if (typeof value !== "string") badRequest(`QMP input member '${key}' must be a string`);
      } else if (key === "arguments") {
        if (!isJsonObject(value)) badRequest("QMP input member 'arguments' must be an object");
      } else if (key !== "id") {
        badRequest(`QMP input member '${key}' is unexpected`);
      }
    }
    const execute = request.execute as string | undefined;
    const outOfBand = this.#oob ? request["exec-oob"] as string | undefined : undefined;
    if (execute !== undefined && outOfBand !== undefined) {
      badRequest("QMP input member 'execute' clashes with 'exec-oob'");
    }
    const name = execute ?? outOfBand;
    if (name === undefined) badRequest("QMP input lacks member 'execute'");
    const command = this.#find(name);
    if (!command) throw new QmpError("CommandNotFound", `The command ${name} has not been found`);
    if (outOfBand !== undefined) badRequest(`The command ${name} does not support OOB`);
    return runCommand(command, this.#context, (request.arguments ?? {}) as JsonObject);
  }

  #find(name: string): QmpCommand<S> | undefined {
    const command = this.#options.commands.get(name);
    return this.#negotiated || command?.beforeNegotiation ? command : undefined;
  }

  #completeNegotiation(capabilities: readonly string[]): void {
    this.#negotiated = true;
    this.#oob = capabilities.includes("oob");
    this.#unsubscribe = this.#options.events?.subscribe((event) => this.#sendEvent(event)) ??
      null;
  }

  #sendEvent(event: QmpEvent): void {
    if (this.#closed) return;
    if (++this.#pendingEvents > MAX_PENDING_EVENTS) return this.close();
    const message = { timestamp: event.timestamp, event: event.name, data: event.data };
    this.#send(message).then(() => this.#pendingEvents--, () => {});
  }

  /** Queue `message` for writing; resolves once written, and wakes input when below the cap. */
  #send(message: unknown): Promise<void> {
    const text = formatJson(message, this.#options.pretty ? { indent: 4 } : {});
    const bytes = encoder.encode(text + "\r\n");
    this.#unsentBytes += bytes.length;
    const written = () => {
      this.#unsentBytes -= bytes.length;
      this.#wakeUp();
    };
    const sending = this.#writer.send([bytes]);
    sending.then(written, written);
    return sending;
  }
}

/**
 * Accepts QMP connections on listeners, one client at a time per listener
 * as QEMU's socket chardevs do: a further client is connected (the kernel
 * queues it) but gets its greeting only when the current one has left.
 */
export class QmpServer<S> {
  readonly #options: MonitorOptions<S>;
  readonly #listeners = new Set<Deno.Listener>();
  readonly #sessions = new Map<QmpMonitor<S>, Promise<void>>();
  #closed = false;

  /** A server whose monitors serve `options`. */
  constructor(options: MonitorOptions<S>) {
    this.#options = options;
  }

  /** Accept connections on `listener` until {@linkcode close}; resolves when it stops. */
  async serve(listener: Deno.Listener): Promise<void> {
    if (this.#closed) throw new Error("QMP server is closed");
    this.#listeners.add(listener);
    try {
      for await (const connection of listener) {
        const monitor = new QmpMonitor(connection, this.#options);
        const session = monitor.run().finally(() => this.#sessions.delete(monitor));
        this.#sessions.set(monitor, session);
        await session;
      }
    } catch (error) {
      if (!this.#closed) throw error;
    } finally {
      this.#listeners.delete(listener);
    }
  }

  /**
   * Stop accepting and end every session (each after its running command
   * replied); resolves once all are closed.
   */
  async close(): Promise<void> {
    this.#closed = true;
    for (const listener of this.#listeners) {
      try {
        listener.close();
      } catch {
        // Already closed.
      }
    }
    for (const monitor of this.#sessions.keys()) monitor.close();
    await Promise.all(this.#sessions.values());
  }
}
