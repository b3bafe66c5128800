/**
 * `denbd serve [OPTIONS] [FILE]`: export one image over NBD with qemu-nbd's
 * flags. Without FILE, a sparse demo image is created and served.
 *
 * @module
 */

import {
  type FlagTable,
  formatFlagHelp,
  parseFlags,
  parseIntegerFlag,
  UsageError,
} from "./flags.ts";
import { createDemoImage, DEMO_IMAGE_SIZE } from "./demo-image.ts";
import { Daemon } from "../daemon/daemon.ts";
import { probeFormat } from "../block/probe.ts";
import { loadLibc } from "../block/libc.ts";
import { DenbdError, messageOf } from "../errors.ts";
import { Logger } from "../log.ts";
import { formatAddress, type ListeningAddress } from "../net/socket-address.ts";
import { FIRST_ACTIVATED_FD, takeActivatedSockets } from "../net/socket-activation.ts";
import type { SocketAddressValue } from "../daemon/qapi-types.ts";
import { VERSION } from "../version.ts";
import { type PidFile, writePidFile } from "./pid-file.ts";
import { NBD_LIMIT } from "../nbd/protocol.ts";
import { DEFAULT_HANDSHAKE_LIMIT_SECONDS } from "../nbd/server/connection.ts";
import { GRACEFUL_CLOSE_LIMIT_MS } from "../nbd/server/server.ts";
import { encodeString } from "../nbd/wire.ts";
import type { Subcommand } from "./subcommand.ts";

/** What each --cache mode means, as QEMU defines them. */
const CACHE_MODES = {
  writeback: { direct: false, noFlush: false, writethrough: false },
  writethrough: { direct: false, noFlush: false, writethrough: true },
  none: { direct: true, noFlush: false, writethrough: false },
  directsync: { direct: true, noFlush: false, writethrough: true },
  unsafe: { direct: false, noFlush: true, writethrough: false },
} as const;

/** What each --discard mode means ("on" and "off" are QEMU's aliases). */
const DISCARD_MODES = { ignore: "ignore", off: "ignore", unmap: "unmap", on: "unmap" } as const;

/** Image formats `serve` can export today. */
const SUPPORTED_FORMATS = ["raw"] as const;

/** qemu-nbd's port when -p is not given. */
const DEFAULT_PORT = "10809";
/** qemu-nbd's address when -b is not given. */
const DEFAULT_HOST = "0.0.0.0";
/** The demo image is writable by anyone who reaches it: it listens on loopback unless -b says. */
const DEMO_HOST = "127.0.0.1";

/** The flags of `denbd serve`, spelled as qemu-nbd spells them. */
export const SERVE_FLAGS = {
  port: { short: "p", value: "PORT", help: `TCP port to listen on (default '${DEFAULT_PORT}')` },
  bind: {
    short: "b",
    value: "IFACE",
    help: `address to listen on (default '${DEFAULT_HOST}'; '${DEMO_HOST}' for the demo image)`,
  },
  socket: { short: "k", value: "PATH", help: "listen on this Unix socket instead of TCP" },
  "export-name": { short: "x", value: "NAME", help: "name of the export (default: empty)" },
  description: { short: "D", value: "TEXT", help: "human-readable description of the export" },
  "handshake-limit": {
    value: "N",
    help: "drop a client that has not finished its handshake within N seconds, 0 for no limit",
    default: String(DEFAULT_HANDSHAKE_LIMIT_SECONDS),
  },
  "read-only": { short: "r", help: "export read-only" },
  format: { short: "f", value: "FORMAT", help: "image format (probed if not given)" },
  persistent: { short: "t", help: "keep serving after the last client disconnects" },
  shared: {
    short: "e",
    value: "NUM",
    help: "serve up to NUM clients at once, 0 for no limit",
    default: "1",
  },
  cache: {
    value: "MODE",
    help: "host cache mode",
    choices: Object.keys(CACHE_MODES),
    default: "writeback",
  },
  discard: {
    value: "MODE",
    help: "what TRIM does: ignore it, or unmap (punch holes)",
    choices: Object.keys(DISCARD_MODES),
    default: "ignore",
  },
  "allocation-depth": {
    short: "A",
    help: "expose the allocation depth (the qemu:allocation-depth metadata context)",
  },
  "pid-file": { value: "PATH", help: "write the server's process id to PATH" },
  verbose: { short: "v", help: "log the listening address, connections and refused requests" },
  help: { short: "h", help: "show this help and exit" },
  version: { short: "V", help: "show the version and exit" },
} as const satisfies FlagTable;

/** The --help text of `denbd serve`. */
export function serveHelp(): string {
  return [
    "Usage: denbd serve [OPTIONS] [FILE]",
    "Export FILE over NBD, with qemu-nbd's options. Without FILE, a 64 MiB sparse demo",
    "image is created in a temporary directory, served (on 127.0.0.1 unless -b says),",
    "and removed on exit. Started by a socket activator (LISTEN_PID, LISTEN_FDS, as",
    "systemd-socket-activate does), it serves the socket it was handed on fd 3.",
    "",
    formatFlagHelp(SERVE_FLAGS),
    "",
    "Without -t, the server exits after its last client disconnects (as qemu-nbd does).",
    "SIGINT or SIGTERM: stop accepting, answer the requests in flight (later ones get",
    `ESHUTDOWN; clients still busy after ${GRACEFUL_CLOSE_LIMIT_MS / 1000} seconds are dropped), ` +
    "flush, exit 0.",
  ].join("\n");
}

/** Settings of one `serve` run, validated. */
interface ServeSettings {
  readonly file: string | null;
  readonly format: string | null;
  readonly address: SocketAddressValue;
  readonly exportName: string;
  readonly description: string | undefined;
  readonly readOnly: boolean;
  readonly persistent: boolean;
  readonly shared: number;
  readonly handshakeLimit: number;
  readonly cache: (typeof CACHE_MODES)[keyof typeof CACHE_MODES];
  readonly discard: "ignore" | "unmap";
  readonly allocationDepth: boolean;
  readonly pidFile: string | undefined;
  readonly verbose: boolean;
}

type ServeValues = ReturnType<typeof parseFlags>["values"];

function resolveSettings(values: ServeValues, positionals: string[]): ServeSettings {
  if (positionals.length > 1) throw new UsageError("Invalid number of arguments");
  const text = (name: keyof typeof SERVE_FLAGS) => values[name] as string | undefined;
  const file = positionals[0] ?? null;
  return {
    file,
    format: text("format") ?? null,
    address: resolveAddress(text("socket"), text("bind"), text("port"), file === null),
    exportName: text("export-name") ?? "",
    description: text("description"),
    readOnly: Boolean(values["read-only"]),
    persistent: Boolean(values.persistent),
    shared: parseIntegerFlag(text("shared")!, "shared device number", 0, 0xffff_ffff),
    // qemu-nbd takes an int.
    handshakeLimit: parseIntegerFlag(text("handshake-limit")!, "handshake limit", 0, 0x7fff_ffff),
    cache: CACHE_MODES[text("cache") as keyof typeof CACHE_MODES],
    discard: DISCARD_MODES[text("discard") as keyof typeof DISCARD_MODES],
    allocationDepth: Boolean(values["allocation-depth"]),
    pidFile: text("pid-file"),
    verbose: Boolean(values.verbose),
  };
}

/**
 * Where to listen: the socket this process was handed by a socket activator
 * (then -k, -b and -p are refused, with qemu-nbd's messages), the Unix
 * socket -k names, or -b and -p (the demo image: loopback unless -b says).
 */
function resolveAddress(
  socket: string | undefined,
  bind: string | undefined,
  port: string | undefined,
  demo: boolean,
): SocketAddressValue {
  const activated = takeActivatedSockets();
  if (activated > 0) {
    const conflict = socket !== undefined
      ? "Unix socket"
      : bind !== undefined
      ? "The interface"
      : port !== undefined
      ? "TCP port number"
      : null;
    if (conflict) {
      throw new DenbdError("invalid", `${conflict} can't be set when using socket activation`);
    }
    if (activated > 1) {
      throw new DenbdError(
        "not-supported",
        "denbd does not support socket activation with LISTEN_FDS > 1",
      );
    }
    return { type: "fd", str: String(FIRST_ACTIVATED_FD) };
  }
  if (socket !== undefined) return { type: "unix", path: socket };
  return {
    type: "inet",
    host: bind ?? (demo ? DEMO_HOST : DEFAULT_HOST),
    port: String(parseIntegerFlag(port ?? DEFAULT_PORT, "port", 0, 65535)),
  };
}

/** qemu-nbd checks the name's and the description's lengths before it opens the image. */
function checkLengths(settings: ServeSettings): void {
  const texts = { "export name": settings.exportName, "export description": settings.description };
  for (const [what, text] of Object.entries(texts)) {
    if (text !== undefined && encodeString(text).length > NBD_LIMIT.MAX_STRING) {
      throw new DenbdError("invalid", `${what} '${text}' too long`);
    }
  }
}

/**
 * Refuse formats `serve` cannot export yet, naming the ones it can. Returns
 * whether the format was probed (not named).
 */
async function checkFormat(file: string, format: string | null): Promise<boolean> {
  const effective = format ?? await probeFormat(file);
  if (!(SUPPORTED_FORMATS as readonly string[]).includes(effective)) {
    const how = format ? `format '${format}'` : `'${file}' looks like ${effective}, which`;
    throw new DenbdError(
      "not-supported",
      `${how} is not supported yet (supported: ${SUPPORTED_FORMATS.join(", ")}); ` +
        `-f raw exports the file's bytes as they are`,
    );
  }
  return format === null;
}

/** qemu-nbd's warning (QEMU's raw driver prints it) for a writable image probed as raw. */
function probedRawWarning(file: string): string {
  return [
    `WARNING: Image format was not specified for '${file}' and probing guessed raw.`,
    "         Automatically detecting the format is dangerous for raw images, " +
    "write operations on block 0 will be restricted.",
    "         Specify the 'raw' format explicitly to remove the restrictions.",
  ].join("\n");
}

/**
 * Open `file` as the node "disk": the file node itself when the format was
 * named (or is the demo's), else a raw node marked probed over it, which
 * keeps block 0 raw. Says what is degraded when FFI is not permitted.
 */
async function openImage(
  daemon: Daemon,
  file: string,
  settings: ServeSettings,
  log: Logger,
): Promise<void> {
  const probed = await checkFormat(file, settings.format);
  const fileNode = {
    driver: "file",
    filename: file,
    "read-only": settings.readOnly,
    cache: { direct: settings.cache.direct, "no-flush": settings.cache.noFlush },
    discard: settings.discard,
  } as const;
  if (probed) {
    if (!settings.readOnly) console.error(probedRawWarning(file));
    await daemon.blockdevAdd({
      driver: "raw",
      "node-name": "disk",
      "read-only": settings.readOnly,
      discard: settings.discard,
      file: fileNode,
    }, true);
  } else {
    await daemon.blockdevAdd({ ...fileNode, "node-name": "disk" });
  }
  if (settings.readOnly && loadLibc() === null) {
    log.warn(
      `without FFI (--allow-ffi), '${file}' is served with no image lock and no hole ` +
        "detection (every block is reported as data)",
    );
  }
}

/** Resolves when the server should stop: on SIGINT/SIGTERM, or when asked. */
class StopSignal {
  /** Resolves once a stop was requested. */
  readonly requested: Promise<string>;
  #resolve!: (reason: string) => void;
  readonly #onSignal = () => this.request("signal");

  constructor() {
    this.requested = new Promise((resolve) => this.#resolve = resolve);
    Deno.addSignalListener("SIGINT", this.#onSignal);
    Deno.addSignalListener("SIGTERM", this.#onSignal);
  }

  /** Ask the server to stop, saying why. */
  request(reason: string): void {
    this.#resolve(reason);
  }

  /** Stop listening for signals. */
  dispose(): void {
    Deno.removeSignalListener("SIGINT", this.#onSignal);
    Deno.removeSignalListener("SIGTERM", this.#onSignal);
  }
}

/**
 * Start the NBD server where `settings` say; `lastClientGone` is called when
 * the last client disconnects (unless -t). Returns where it listens.
 */
function listen(
  daemon: Daemon,
  settings: ServeSettings,
  lastClientGone: () => void,
): ListeningAddress {
  try {
    return daemon.nbdServerStart(
      {
        addr: settings.address,
        "max-connections": settings.shared,
        "handshake-max-seconds": settings.handshakeLimit,
      },
      {
        onDisconnect: (remaining) => {
          if (!settings.persistent && remaining === 0) lastClientGone();
        },
      },
    );
  } catch (error) {
    if (settings.address.type !== "fd") throw error;
    throw new DenbdError("invalid", `Failed to use socket activation: ${messageOf(error)}`);
  }
}

/** Run `denbd serve` with `args`; resolves to the exit code. */
export async function runServe(args: readonly string[]): Promise<number> {
  const { values, positionals } = parseFlags(SERVE_FLAGS, args);
  if (values.help) {
    console.log(serveHelp());
    return 0;
  }
  if (values.version) {
    console.log(`denbd ${VERSION}`);
    return 0;
  }
  const settings = resolveSettings(values, positionals);
  checkLengths(settings);
  const log = new Logger({ verbose: settings.verbose });
  const demo = settings.file === null ? await createDemoImage() : null;
  const file = settings.file ?? demo!.path;
  const daemon = new Daemon(log);
  const stop = new StopSignal();
  let pidFile: PidFile | undefined;
  try {
    await openImage(
      daemon,
      file,
      { ...settings, format: settings.format ?? (demo ? "raw" : null) },
      log,
    );
    const bound = listen(daemon, settings, () => stop.request("last client disconnected"));
    if (demo) {
      log.info(
        `serving a ${settings.readOnly ? "read-only" : "writable"} ` +
          `${DEMO_IMAGE_SIZE / (1024 * 1024)} MiB demo image on ` +
          `${formatAddress(bound)}` +
          (settings.address.type === "inet" && settings.address.host === DEMO_HOST
            ? " (reachable from this machine only; -b sets the address)"
            : ""),
      );
    }
    daemon.blockExportAdd({
      type: "nbd",
      id: "disk",
      "node-name": "disk",
      name: settings.exportName,
      description: settings.description,
      writable: !settings.readOnly,
      writethrough: settings.cache.writethrough,
      "allocation-depth": settings.allocationDepth,
    });
    // Locked while serving; left in place at exit, as qemu-nbd leaves it.
    if (settings.pidFile) pidFile = await writePidFile(settings.pidFile);
    log.debug(
      `serving '${file}' as export '${settings.exportName}' on ${formatAddress(bound)}` +
        (settings.readOnly ? " (read-only)" : ""),
    );
    log.debug(`stopping: ${await stop.requested}`);
  } finally {
    stop.dispose();
    pidFile?.release(false);
    await daemon.shutdown("answered");
    await demo?.remove();
  }
  return 0;
}

/** `denbd serve`, for the dispatcher. */
export const serveCommand: Subcommand = {
  summary: "export a disk image over NBD (a qemu-nbd drop-in)",
  run: runServe,
  help: serveHelp,
};
