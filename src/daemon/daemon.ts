/**
 * The Daemon: the one state object that wires the block layer to the NBD
 * server. It holds the block graph, dirty bitmaps, user objects, the NBD
 * server, the exports and the event bus. Its methods are named after the
 * QMP commands they implement and take their arguments in QAPI's shape
 * (QEMU's member names), so `denbd serve`, the daemon's command line and its
 * QMP monitors all drive the same code. Errors carry QEMU 7.2's messages.
 *
 * @module
 */

import { DirtyBitmapCommands } from "../block/bitmap-commands.ts";
import { DenbdError, osErrorText } from "../errors.ts";
import type { Logger } from "../log.ts";
import { NBD_LIMIT } from "../nbd/protocol.ts";
import { encodeString } from "../nbd/wire.ts";
import { ExportTable, NbdExport } from "../nbd/server/export.ts";
import { qemuNamespace } from "../nbd/server/qemu-namespace.ts";
import { DEFAULT_MAX_CONNECTIONS, NbdServer } from "../nbd/server/server.ts";
import type { ServerTls } from "../nbd/server/connection.ts";
import type { TlsCredentials } from "../tls/credentials.ts";
import { type ListeningAddress, listenOn, removeStaleSocket } from "../net/socket-address.ts";
import { adoptListener } from "../net/inherited-listener.ts";
import { EventBus } from "../qmp/events.ts";
import { isWellFormedId } from "../qmp/qemu-opts.ts";
import { NodeGraph, type NodeOpenExtras } from "./nodes.ts";
import { ObjectRegistry } from "./objects.ts";
import { queryStats } from "./query-stats.ts";
import {
  BLOCK_EXPORT_DELETED,
  type BlockDeviceInfoValue,
  type BlockdevOptionsValue,
  type BlockExportInfoValue,
  type BlockExportOptionsValue,
  type BlockExportRemoveModeValue,
  type BlockInfoValue,
  type DaemonEvent,
  type DenbdStatsValue,
  isServedExport,
  type NbdServerAddOptionsValue,
  type NbdServerOptionsValue,
  type ObjectOptionsValue,
  type SocketAddressValue,
} from "./qapi-types.ts";

/** Options of nbd-server-start beyond the QAPI ones. */
export interface NbdServerHooks {
  /** Called whenever a client disconnects, with the number still connected. */
  readonly onDisconnect?: (remaining: number) => void;
}

/**
 * What becomes of NBD clients when the daemon stops: "dropped" at once, with
 * no reply to their requests in flight (qemu-storage-daemon's way), or
 * "answered" first (then closed).
 */
export type ClientsAtStop = "dropped" | "answered";

interface RunningNbdServer {
  readonly server: NbdServer;
  readonly address: ListeningAddress;
  readonly maxConnections: number;
  /** The TLS clients must start, if any: the server holds a reference to its credentials. */
  readonly tls?: ServerTls;
  /** Set once nbd-server-stop began: resolves when the server has stopped. */
  stopping: Promise<void> | null;
}

/**
 * An export and what it holds. Its lifecycle is QEMU's: in use until its
 * removal is requested, then shutting down (its name is free, its id is not)
 * until its last client has gone, then deleted, with BLOCK_EXPORT_DELETED.
 */
interface ExportEntry {
  readonly id: string;
  readonly nodeName: string;
  readonly nbd: NbdExport;
  /** The server its clients connect to. */
  readonly server: NbdServer;
  /** The iothread object the export was put in, if any. */
  readonly iothread?: string;
  readonly releaseBitmaps: () => void;
  /** Set once its removal was requested (it is shutting down): resolves when it is deleted. */
  deletion: Promise<void> | null;
}

/** The daemon's state. */
export class Daemon {
  /** Diagnostics. */
  readonly log: Logger;
  /** Events for the QMP monitors. */
  readonly events = new EventBus<DaemonEvent>();
  /** The block graph. */
  readonly nodes = new NodeGraph();
  /** The block-dirty-bitmap-* commands over the daemon's nodes. */
  readonly dirtyBitmaps = new DirtyBitmapCommands((name) => this.nodes.get(name)?.node);
  /** User-created objects (iothreads, TLS credentials, ...). */
  readonly objects = new ObjectRegistry(
    (id) => this.#objectUser(id),
    (message) => this.log.warn(message),
  );
  readonly #catalog = new ExportTable();
  /** Exports by id, in creation order. */
  readonly #exports = new Map<string, ExportEntry>();
  #nbd: RunningNbdServer | null = null;

  /** An empty daemon that logs to `log`. */
  constructor(log: Logger) {
    this.log = log;
  }

  /** blockdev-add: open a node (`extras`: see {@linkcode NodeGraph.add}). */
  async blockdevAdd(options: BlockdevOptionsValue, extras: NodeOpenExtras = {}): Promise<void> {
    await this.nodes.add(options, extras);
  }

  /** blockdev-del: close a node nothing uses. */
  async blockdevDel(nodeName: string): Promise<void> {
    const exported = [...this.#exports.values()].some((entry) => entry.nodeName === nodeName);
    await this.nodes.delete(nodeName, exported);
  }

  /**
   * query-named-block-nodes: every node, newest first; unless `flat`, each
   * with its backing chain nested in its image.
   */
  async queryNamedBlockNodes(flat = false): Promise<BlockDeviceInfoValue[]> {
    return await Promise.all(
      this.nodes.list().map((entry) =>
        this.nodes.describe(entry, this.dirtyBitmaps.query(entry.name), flat)
      ),
    );
  }

  /**
   * query-block: the block backends that have a name or a device. As in
   * qemu-storage-daemon, exports use anonymous backends, so there are none.
   */
  queryBlock(): BlockInfoValue[] {
    return [];
  }

  /** nbd-server-start (and --nbd-server): listen for NBD clients; returns the bound address. */
  nbdServerStart(options: NbdServerOptionsValue, hooks: NbdServerHooks = {}): ListeningAddress {
    if (this.#nbd) throw new DenbdError("busy", "NBD server already running");
    const tlsCreds = options["tls-creds"];
    const tls = tlsCreds === undefined
      ? undefined
      : this.#serverTls(tlsCreds, options["tls-authz"]);
    const maxConnections = options["max-connections"] ?? DEFAULT_MAX_CONNECTIONS;
    const { listener, bound } = bind(options.addr);
    // The server holds the credentials while it runs, so an object-del of them leaves it be.
    tls?.credentials.acquire();
    const server = new NbdServer({
      catalog: this.#catalog,
      log: this.log,
      maxConnections,
      handshakeLimitSeconds: options["handshake-max-seconds"],
      onDisconnect: hooks.onDisconnect,
      tls,
    });
    server.listen(listener);
    this.#nbd = { server, address: bound, maxConnections, tls, stopping: null };
    return bound;
  }

  /**
   * nbd-server-stop: remove every NBD export, dropping its clients, and wait
   * until all are deleted (an event each), then stop listening. Meanwhile
   * the server counts as not running.
   */
  async nbdServerStop(): Promise<void> {
    const nbd = this.#runningServer();
    nbd.stopping = this.#stopServer(nbd);
    await nbd.stopping;
  }

  async #stopServer(nbd: RunningNbdServer): Promise<void> {
    try {
      await Promise.all([...this.#exports.values()].map((entry) => this.#requestRemoval(entry)));
      await nbd.server.close();
      if (nbd.address.type === "unix") removeStaleSocket(nbd.address.path);
    } finally {
      nbd.tls?.credentials.relinquish();
      this.#nbd = null;
    }
  }

  /** block-export-add (and --export): export a node over the running NBD server. */
  blockExportAdd(options: BlockExportOptionsValue): void {
    if (!isServedExport(options)) {
      throw new DenbdError(
        "not-supported",
        `${options.type} exports are not supported by denbd yet`,
      );
    }
    if (!isWellFormedId(options.id)) throw new DenbdError("invalid", "Invalid block export id");
    if (this.#exports.has(options.id)) {
      throw new DenbdError("busy", `Block export id '${options.id}' is already in use`);
    }
    const nodeName = options["node-name"];
    const entry = this.nodes.get(nodeName);
    if (!entry) {
      throw new DenbdError("not-found", `Cannot find device='' nor node-name='${nodeName}'`);
    }
    if (options.iothread !== undefined && this.objects.get(options.iothread)?.type !== "iothread") {
      throw new DenbdError("not-found", `iothread "${options.iothread}" not found`);
    }
    if (options.writable && !entry.node.capabilities.writable) {
      throw new DenbdError("read-only", "Cannot export read-only node as writable");
    }
    const nbd = this.#runningServer();
    const name = options.name ?? nodeName;
    checkLength(name, "export name");
    checkLength(options.description ?? "", "description");
    if (this.#catalog.find(name)) {
      throw new DenbdError("busy", `NBD server already has export named '${name}'`);
    }
    const claimed = this.dirtyBitmaps.claimForExport(
      entry.node,
      options.bitmaps ?? [],
      !options.writable,
    );
    const extraNamespaces = options["allocation-depth"] || claimed.bitmaps.length
      ? [qemuNamespace({
        allocationDepth: options["allocation-depth"] ? entry.node : undefined,
        bitmaps: claimed.bitmaps,
      })]
      : [];
    const exported = new NbdExport({
      name,
      description: options.description,
      node: entry.node,
      readOnly: !options.writable,
      writethrough: options.writethrough,
      allowMultiConn: nbd.maxConnections !== 1,
      extraNamespaces,
    });
    this.#catalog.add(exported);
    this.#exports.set(options.id, {
      id: options.id,
      nodeName,
      nbd: exported,
      server: nbd.server,
      iothread: options.iothread,
      releaseBitmaps: claimed.release,
      deletion: null,
    });
  }

  /** nbd-server-add (deprecated): an NBD export whose id is its name (default: the device). */
  nbdServerAdd(options: NbdServerAddOptionsValue): void {
    const node = this.nodes.get(options.device);
    if (!node) {
      throw new DenbdError(
        "not-found",
        `Cannot find device='${options.device}' nor node-name='${options.device}'`,
      );
    }
    const name = options.name ?? options.device;
    this.blockExportAdd({
      type: "nbd",
      id: name,
      "node-name": options.device,
      name,
      description: options.description,
      // QEMU exports a read-only node read-only even when asked for writable.
      writable: Boolean(options.writable) && node.node.capabilities.writable,
      bitmaps: options.bitmap === undefined ? [] : [options.bitmap],
    });
  }

  /**
   * block-export-del: request an export's removal. "safe" (the default)
   * refuses while clients use it; "hard" drops them. As in QEMU, an export
   * without clients is deleted (BLOCK_EXPORT_DELETED) before this returns;
   * one whose clients are dropped is shutting down until they are gone
   * (requests in flight finish first), and is deleted after this returns.
   */
  blockExportDel(id: string, mode: BlockExportRemoveModeValue = "safe"): void {
    const entry = this.#exports.get(id);
    if (!entry) throw new DenbdError("not-found", `Export '${id}' is not found`);
    if (entry.deletion) throw new DenbdError("busy", `Export '${id}' is already shutting down`);
    if (mode === "safe" && entry.server.clientsOf(entry.nbd) > 0) {
      throw new DenbdError("busy", `export '${id}' still in use`);
    }
    void this.#requestRemoval(entry);
  }

  /** nbd-server-remove (deprecated): block-export-del of an NBD export by id. */
  nbdServerRemove(name: string, mode: BlockExportRemoveModeValue = "safe"): void {
    this.blockExportDel(name, mode);
  }

  /** query-block-exports: every export, newest first, shutting down or not. */
  queryBlockExports(): BlockExportInfoValue[] {
    return [...this.#exports.values()].reverse().map((entry) => ({
      id: entry.id,
      type: "nbd",
      "node-name": entry.nodeName,
      "shutting-down": entry.deletion !== null,
    }));
  }

  /** x-denbd-query-stats: what each export and each connected NBD client has been served. */
  xDenbdQueryStats(): DenbdStatsValue {
    return queryStats(this.#nbd?.server ?? null, [...this.#exports.values()]);
  }

  /** object-add. */
  async objectAdd(options: ObjectOptionsValue): Promise<void> {
    await this.objects.add(options);
  }

  /** object-del. */
  objectDel(id: string): void {
    this.objects.delete(id);
  }

  /**
   * Stop everything in order: every export is deleted (an event each), the
   * NBD server stops, then every node is flushed and closed and every object
   * released (TLS credentials, authorization file watchers). Clients are
   * dropped at once, as QEMU does on quit or a signal, or with "answered"
   * are let finish their requests in flight first (see {@linkcode stopExporting}).
   */
  async shutdown(clients: ClientsAtStop = "dropped"): Promise<void> {
    await this.stopExporting(clients);
    await this.nodes.closeAll();
    await this.objects.closeAll();
  }

  /**
   * Delete every export (an event each; those without clients at once, in
   * creation order) and stop the NBD server, if running or stopping. With
   * "dropped", clients are dropped as by nbd-server-stop; with "answered",
   * the server first stops accepting and ends each connection gracefully
   * (requests in flight answered, later ones refused with ESHUTDOWN, within
   * a bounded time), so the exports are then deleted without clients.
   */
  async stopExporting(clients: ClientsAtStop = "dropped"): Promise<void> {
    if (clients === "answered" && this.#nbd && !this.#nbd.stopping) {
      await this.#nbd.server.close();
    }
    if (this.#nbd) await (this.#nbd.stopping ?? this.nbdServerStop());
  }

  /**
   * Start removing an export (QEMU's blk_exp_request_shutdown): new clients
   * can no longer choose it, and it is deleted now if it has no clients, or
   * else once the dropped clients' connections have ended. Resolves when it
   * is deleted.
   */
  #requestRemoval(entry: ExportEntry): Promise<void> {
    if (entry.deletion) return entry.deletion;
    this.#catalog.remove(entry.nbd.name);
    if (entry.server.clientsOf(entry.nbd) === 0) {
      entry.deletion = Promise.resolve();
      this.#delete(entry);
    } else {
      entry.deletion = entry.server.dropClients(entry.nbd).then(() => this.#delete(entry));
    }
    return entry.deletion;
  }

  /** The end of an export's lifecycle: its bitmaps and id are free, the monitors told. */
  #delete(entry: ExportEntry): void {
    entry.releaseBitmaps();
    this.#exports.delete(entry.id);
    this.events.emit(BLOCK_EXPORT_DELETED, { id: entry.id });
  }

  /** The NBD server, unless it is not running or is being stopped. */
  #runningServer(): RunningNbdServer {
    if (!this.#nbd || this.#nbd.stopping) {
      throw new DenbdError("invalid", "NBD server not running");
    }
    return this.#nbd;
  }

  /**
   * The TLS credentials object `id` for a server, checked as QEMU checks it
   * ("No TLS credentials with id ...", "Object with id ... is not TLS
   * credentials", "Expected TLS credentials for a server endpoint").
   */
  serverTlsCredentials(id: string): TlsCredentials {
    const credentials = this.objects.tlsCredentials(id);
    if (credentials.endpoint !== "server") {
      throw new DenbdError("invalid", "Expected TLS credentials for a server endpoint");
    }
    return credentials;
  }

  /**
   * The NBD server's TLS: credentials `credsId` and, with `authzId`, the
   * authorization object looked up by id at each client's check, as QEMU
   * does (a missing one denies). As in QEMU 7.2, only X.509 clients whose
   * certificate was verified (verify-peer) are checked against it; PSK and
   * anonymous clients, and X.509 without verify-peer, are let in whatever
   * it says. Without credentials, `tls-authz` is ignored (qsd accepts it).
   */
  #serverTls(credsId: string, authzId: string | undefined): ServerTls {
    const credentials = this.serverTlsCredentials(credsId);
    if (authzId === undefined || credentials.kind !== "x509" || !credentials.verifyPeer) {
      return { credentials };
    }
    return {
      credentials,
      authorize: (peer) =>
        peer.identity === null ? null : this.objects.authorize(authzId, peer.identity),
    };
  }

  /**
   * What uses the object `id`, or null. QEMU 7.2 lets an iothread in use be
   * deleted and then crashes on its next use; denbd refuses. TLS credentials
   * and authorization objects may go, as in qsd: the NBD server holds a
   * reference to its credentials and goes on with them, and looks the
   * authorization object up at each check, so later clients are denied.
   */
  #objectUser(id: string): string | null {
    const exported = [...this.#exports.values()].find((entry) => entry.iothread === id);
    return exported ? `export '${exported.id}'` : null;
  }
}

/** Listen on a QAPI address, with QEMU's messages for what fails. */
function bind(address: SocketAddressValue): { listener: Deno.Listener; bound: ListeningAddress } {
  switch (address.type) {
    case "inet": {
      if (!/^\d+$/.test(address.port) || Number(address.port) > 65535) {
        throw new DenbdError(
          "invalid",
          `address resolution failed for ${address.host}:${address.port}: ` +
            "Servname not supported for ai_socktype",
        );
      }
      try {
        return listenOn({ type: "inet", host: address.host, port: Number(address.port) });
      } catch (error) {
        throw bindError(
          error,
          `Failed to find an available port`,
          `${address.host}:${address.port}`,
        );
      }
    }
    case "unix":
      if (address.abstract) {
        throw new DenbdError("not-supported", "abstract unix sockets are not supported by denbd");
      }
      try {
        return listenOn({ type: "unix", path: address.path });
      } catch (error) {
        throw bindError(error, `Failed to bind socket to ${address.path}`, address.path);
      }
    case "vsock":
      throw new DenbdError("not-supported", "vsock addresses are not supported by denbd");
    case "fd": {
      // A descriptor number, as qemu-storage-daemon takes it on its command line.
      if (!/^\d+$/.test(address.str)) {
        throw new DenbdError("invalid", `Unable to parse FD number ${address.str}`);
      }
      const fd = Number(address.str);
      return { listener: adoptListener(fd), bound: { type: "fd", fd } };
    }
  }
}

/** A bind failure as QEMU words it: `what: reason`; unresolvable hosts as QEMU reports them. */
function bindError(error: unknown, what: string, where: string): DenbdError {
  const message = osErrorText(error);
  const lookup = /^failed to lookup address information: (.*)$/s.exec(message);
  if (lookup) {
    // The resolver's own text (getaddrinfo's gai_strerror), without the runtime's preamble.
    return new DenbdError("invalid", `address resolution failed for ${where}: ${lookup[1]}`);
  }
  return new DenbdError("io", `${what}: ${message}`);
}

/** Refuse export names and descriptions longer than NBD allows, as QEMU words it. */
function checkLength(text: string, what: string): void {
  if (encodeString(text).length > NBD_LIMIT.MAX_STRING) {
    throw new DenbdError("invalid", `${what} '${text}' too long`);
  }
}
