/**
 * The daemon's QMP monitors and the socket chardevs they listen on
 * (--chardev socket,...,server=on and --monitor chardev=ID). A chardev is
 * bound when it is defined; without wait=off its definition waits for the
 * first client (QEMU's default), who is then the monitor's first session.
 * Each chardev serves one client at a time.
 *
 * @module
 */

import { DenbdError, osErrorText } from "../errors.ts";
import type { CommandTable } from "../qmp/command.ts";
import { QmpMonitor, QmpServer } from "../qmp/monitor.ts";
import { listenOn, removeStaleSocket, type SocketAddress } from "../net/socket-address.ts";
import type { Daemon } from "./daemon.ts";

/** A socket chardev: where it listens and whether its definition waits for a client. */
export interface SocketChardevOptions {
  /** The chardev's id. */
  readonly id: string;
  /** Where to listen. */
  readonly address: SocketAddress;
  /** Wait for the first client before going on (QEMU's default for server=on). */
  readonly wait: boolean;
}

interface Chardev {
  readonly listener: Deno.Listener | null;
  readonly address: SocketAddress | null;
  /** The first client, when the definition waited for one. */
  readonly waiting: Deno.Conn | null;
  used: boolean;
}

/** Chardevs and the monitors on them. */
export class MonitorHost {
  readonly #daemon: Daemon;
  readonly #commands: CommandTable<Daemon>;
  readonly #requestQuit: () => void;
  readonly #chardevs = new Map<string, Chardev>();
  readonly #servers: QmpServer<Daemon>[] = [];
  readonly #serving: Promise<void>[] = [];
  readonly #adopted = new Set<QmpMonitor<Daemon>>();

  /** Monitors that run `commands` on `daemon`; `requestQuit` is called by quit. */
  constructor(daemon: Daemon, commands: CommandTable<Daemon>, requestQuit: () => void) {
    this.#daemon = daemon;
    this.#commands = commands;
    this.#requestQuit = requestQuit;
  }

  /**
   * Define a socket chardev: bind it now; unless `wait` is off, resolve only
   * once the first client has connected.
   */
  async addSocket(options: SocketChardevOptions, onWait?: (where: string) => void): Promise<void> {
    this.#checkNew(options.id);
    let bound: { listener: Deno.Listener; bound: SocketAddress };
    try {
      bound = listenOn(options.address);
    } catch (error) {
      const where = options.address.type === "unix" ? ` to ${options.address.path}` : "";
      throw new DenbdError("io", `Failed to bind socket${where}: ${osErrorText(error)}`);
    }
    let waiting: Deno.Conn | null = null;
    if (options.wait) {
      onWait?.(describe(bound.bound));
      waiting = await bound.listener.accept();
    }
    this.#chardevs.set(options.id, {
      listener: bound.listener,
      address: bound.bound,
      waiting,
      used: false,
    });
  }

  /** Define a null chardev (a monitor on it receives nothing). */
  addNull(id: string): void {
    this.#checkNew(id);
    this.#chardevs.set(id, { listener: null, address: null, waiting: null, used: false });
  }

  /** Start a QMP monitor on chardev `id` (--monitor chardev=ID). */
  addMonitor(id: string, options: { pretty?: boolean } = {}): void {
    const chardev = this.#chardevs.get(id);
    if (!chardev) throw new DenbdError("not-found", `chardev "${id}" not found`);
    if (chardev.used) throw new DenbdError("busy", `Device '${id}' is in use`);
    chardev.used = true;
    if (!chardev.listener) return;
    const monitorOptions = {
      commands: this.#commands,
      state: this.#daemon,
      events: this.#daemon.events,
      requestQuit: this.#requestQuit,
      pretty: options.pretty,
    };
    const server = new QmpServer<Daemon>(monitorOptions);
    this.#servers.push(server);
    const listener = chardev.listener;
    const first = chardev.waiting;
    this.#serving.push((async () => {
      if (first) {
        const monitor = new QmpMonitor<Daemon>(first, monitorOptions);
        this.#adopted.add(monitor);
        await monitor.run();
        this.#adopted.delete(monitor);
      }
      await server.serve(listener);
    })());
  }

  /** Close every monitor (each after its running command replied) and remove the socket files. */
  async close(): Promise<void> {
    for (const monitor of this.#adopted) monitor.close();
    await Promise.all(this.#servers.map((server) => server.close()));
    for (const chardev of this.#chardevs.values()) {
      if (!chardev.used) {
        chardev.waiting?.close();
        chardev.listener?.close();
      }
      if (chardev.address?.type === "unix") removeStaleSocket(chardev.address.path);
    }
    await Promise.allSettled(this.#serving);
  }

  #checkNew(id: string): void {
    if (this.#chardevs.has(id)) {
      throw new DenbdError(
        "busy",
        `attempt to add duplicate property '${id}' to object (type 'container')`,
      );
    }
  }
}

/** A chardev's address as QEMU prints it while waiting for a client. */
function describe(address: SocketAddress): string {
  return address.type === "unix"
    ? `disconnected:unix:${address.path},server=on`
    : `disconnected:tcp:${address.host}:${address.port},server=on`;
}
