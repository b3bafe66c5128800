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
import { loadLibc } from "../block/libc.ts";
import { ObjectOptions } from "../daemon/qapi-types.ts";
import { DETECT_ZEROES_UNMAP_NEEDS_DISCARD } from "../block/detect-zeroes.ts";
import { validateInput } from "../qmp/input.ts";
import { isJsonArgument, parseKeyval, QSD_IMPLIED_KEYS } from "../qmp/keyval.ts";
import { JsonStreamParser } from "../qmp/json-stream.ts";
import type { JsonValue } from "../qmp/json-value.ts";
import { isForkChild, runForkParent, signalForkReady } from "./fork.ts";
import {
  EXPORTED_NODE,
  type OpenedImage,
  openServeImage,
  probedRawWarning,
  SERVE_FORMATS,
} from "./serve-image.ts";
import { DenbdError, kindOf, messageOf } from "../errors.ts";
import {
  LOG_FORMATS,
  LOG_LEVELS,
  type LogFlags,
  type LogFormat,
  Logger,
  loggerOptionsOf,
  type LogLevel,
} from "../log.ts";
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
import { parseQmpAddress } from "./qmp.ts";
import { MonitorHost } from "../daemon/monitors.ts";
import { serveMonitorCommands } from "../daemon/qmp-commands.ts";
import type { SocketAddress } from "../net/socket-address.ts";

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

/** The --aio modes qemu-nbd accepts. */
const AIO_MODES = ["threads", "native", "io_uring"] as const;

/** The --detect-zeroes modes. */
const DETECT_ZEROES_MODES = ["off", "on", "unmap"] as const;

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
  format: {
    short: "f",
    value: "FORMAT",
    help: `image format: ${SERVE_FORMATS.join(" or ")} (probed if not given)`,
    suggested: SERVE_FORMATS,
  },
  "image-opts": {
    help: "FILE is a node definition (QemuOpts), e.g. driver=qcow2,file.filename=disk.qcow2",
  },
  offset: { short: "o", value: "OFFSET", help: "export the image from byte OFFSET on" },
  snapshot: {
    short: "s",
    help: "write to a temporary qcow2 overlay over FILE (deleted on exit); FILE is not changed",
  },
  "load-snapshot": {
    short: "l",
    value: "SNAPSHOT",
    help: "export the internal snapshot SNAPSHOT of a qcow2 image, read-only " +
      "(snapshot.id=ID, snapshot.name=NAME, or an id or name)",
  },
  bitmap: {
    short: "B",
    value: "NAME",
    help: "export the dirty bitmap NAME (metadata context qemu:dirty-bitmap:NAME)",
    multiple: true,
  },
  persistent: { short: "t", help: "keep serving after the last client disconnects" },
  shared: {
    short: "e",
    value: "NUM",
    help: "serve up to NUM clients at once, 0 for no limit",
    default: "1",
  },
  cache: {
    value: "MODE",
    help: "host cache mode (default 'writeback')",
    choices: Object.keys(CACHE_MODES),
  },
  nocache: { short: "n", help: "bypass the host cache: --cache=none" },
  aio: {
    value: "MODE",
    help: `accepted as qemu-nbd takes it (${AIO_MODES.join(", ")}); ` +
      "native needs --cache=none or directsync. It changes nothing: denbd does its I/O " +
      "with pread/pwrite on Deno's thread pool whatever the mode",
    suggested: AIO_MODES,
  },
  discard: {
    value: "MODE",
    help: "what TRIM does: ignore it, or unmap (punch holes)",
    choices: Object.keys(DISCARD_MODES),
    default: "ignore",
  },
  "detect-zeroes": {
    value: "MODE",
    help: "turn writes of zeroes into zero requests: off, on, or unmap (deallocate; " +
      "needs --discard=unmap)",
    suggested: DETECT_ZEROES_MODES,
  },
  "allocation-depth": {
    short: "A",
    help: "expose the allocation depth (the qemu:allocation-depth metadata context)",
  },
  "pid-file": { value: "PATH", help: "write the server's process id to PATH" },
  object: {
    value: "PROPERTIES",
    help: "create an object (qemu-nbd's --object: iothread, secret, tls-creds-*, authz-*)",
    multiple: true,
  },
  "tls-creds": {
    value: "ID",
    help: "require TLS with the credentials object ID (an --object tls-creds-*, endpoint=server)",
  },
  "tls-authz": {
    value: "ID",
    help: "let in only TLS clients the authorization object ID allows (X.509 with verify-peer)",
  },
  "tls-hostname": {
    value: "NAME",
    help: "refused: qemu-nbd takes it only with --list, which denbd serve does not have",
  },
  fork: { help: "return once the server listens, and serve in the background" },
  qmp: {
    value: "SOCKET",
    help: "denbd's own, not qemu-nbd's: a QMP monitor on the Unix socket SOCKET (or at " +
      "HOST:PORT) answering query-block-exports and x-denbd-query-stats (see 'denbd top')",
  },
  list: {
    short: "L",
    help: "list another server's exports",
    notBuilt: "use 'denbd list URI' (as nbdinfo --list)",
  },
  connect: {
    short: "c",
    value: "DEV",
    help: "connect the image to the kernel's NBD device DEV",
    notBuilt: "serve it and attach the device with nbd-client",
  },
  disconnect: {
    short: "d",
    help: "disconnect the kernel's NBD device",
    notBuilt: "use 'nbd-client -d DEV'",
  },
  trace: {
    short: "T",
    value: "PATTERN",
    help: "QEMU's trace events",
    notBuilt: "denbd has no trace events; -v logs connections and refusals",
  },
  "selinux-label": {
    value: "LABEL",
    help: "SELinux label of the listening socket",
    notBuilt: "denbd sets no SELinux labels",
  },
  verbose: {
    short: "v",
    help: "log the listening address, connections and refusals, with times",
  },
  "log-level": {
    value: "LEVEL",
    help: "denbd extension: the least severe records logged, with times " +
      "(default info, debug with -v; it wins over -v)",
    choices: LOG_LEVELS,
  },
  "log-format": {
    value: "FORMAT",
    help: "denbd extension: text lines (default), or JSON objects with time, level, msg, " +
      "client, peer, export",
    choices: LOG_FORMATS,
  },
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
  readonly imageOpts: boolean;
  readonly offset: number | undefined;
  readonly snapshot: boolean;
  readonly loadSnapshot: string | undefined;
  readonly bitmaps: readonly string[];
  readonly address: SocketAddressValue;
  readonly exportName: string;
  readonly description: string | undefined;
  readonly readOnly: boolean;
  readonly persistent: boolean;
  readonly shared: number;
  readonly handshakeLimit: number;
  readonly cache: (typeof CACHE_MODES)[keyof typeof CACHE_MODES];
  readonly discard: "ignore" | "unmap";
  readonly detectZeroes: (typeof DETECT_ZEROES_MODES)[number];
  readonly allocationDepth: boolean;
  readonly objects: readonly string[];
  readonly tlsCreds: string | undefined;
  readonly tlsAuthz: string | undefined;
  readonly fork: boolean;
  readonly pidFile: string | undefined;
  readonly log: LogFlags;
  readonly qmp: SocketAddress | undefined;
}

type ServeValues = ReturnType<typeof parseFlags>["values"];

function resolveSettings(values: ServeValues, positionals: string[]): ServeSettings {
  if (positionals.length > 1) throw new UsageError("Invalid number of arguments");
  const text = (name: keyof typeof SERVE_FLAGS) => values[name] as string | undefined;
  const list = (name: keyof typeof SERVE_FLAGS) => (values[name] ?? []) as string[];
  const file = positionals[0] ?? null;
  const imageOpts = Boolean(values["image-opts"]);
  if (imageOpts && text("format") !== undefined) {
    throw new UsageError("--image-opts and -f are mutually exclusive");
  }
  const loadSnapshot = text("load-snapshot");
  const discard = DISCARD_MODES[text("discard") as keyof typeof DISCARD_MODES];
  return {
    file,
    format: text("format") ?? null,
    imageOpts,
    offset: parseOffset(text("offset")),
    snapshot: Boolean(values.snapshot),
    loadSnapshot,
    bitmaps: list("bitmap"),
    address: resolveAddress(text("socket"), text("bind"), text("port"), file === null),
    exportName: text("export-name") ?? "",
    description: text("description"),
    // qemu-nbd exports a loaded snapshot read-only.
    readOnly: Boolean(values["read-only"]) || loadSnapshot !== undefined,
    persistent: Boolean(values.persistent),
    shared: parseIntegerFlag(text("shared")!, "shared device number", 0, 0xffff_ffff),
    // qemu-nbd takes an int.
    handshakeLimit: parseIntegerFlag(text("handshake-limit")!, "handshake limit", 0, 0x7fff_ffff),
    cache: resolveCache(text("cache"), Boolean(values.nocache), text("aio"), file),
    discard,
    detectZeroes: resolveDetectZeroes(text("detect-zeroes"), discard),
    allocationDepth: Boolean(values["allocation-depth"]),
    objects: list("object"),
    ...resolveTls(text("tls-creds"), text("tls-authz"), text("tls-hostname")),
    fork: Boolean(values.fork),
    pidFile: text("pid-file"),
    log: {
      verbose: Boolean(values.verbose),
      level: text("log-level") as LogLevel | undefined,
      format: text("log-format") as LogFormat | undefined,
    },
    qmp: resolveQmp(text("qmp")),
  };
}

/** --qmp: a Unix socket path or HOST:PORT, as `denbd qmp` reads its target. */
function resolveQmp(text: string | undefined): SocketAddress | undefined {
  if (text === undefined) return undefined;
  const address = parseQmpAddress(text);
  return address.transport === "unix"
    ? { type: "unix", path: address.path }
    : { type: "inet", host: address.hostname, port: address.port };
}

/** --tls-creds, --tls-authz and --tls-hostname, with qemu-nbd's refusals. */
function resolveTls(
  tlsCreds: string | undefined,
  tlsAuthz: string | undefined,
  tlsHostname: string | undefined,
): { tlsCreds: string | undefined; tlsAuthz: string | undefined } {
  if (tlsCreds === undefined) {
    for (const [flag, value] of [["--tls-authz", tlsAuthz], ["--tls-hostname", tlsHostname]]) {
      if (value !== undefined) {
        throw new DenbdError("invalid", `${flag} is not permitted without --tls-creds`);
      }
    }
  }
  if (tlsHostname !== undefined) {
    throw new DenbdError("invalid", "TLS hostname is only supported with export list");
  }
  return { tlsCreds, tlsAuthz };
}

/** -o: a C integer as qemu-nbd reads it; a negative one is refused later, with QEMU's words. */
function parseOffset(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^[+-]?\d+$/.test(text.trim())) throw new DenbdError("invalid", `Invalid offset '${text}'`);
  const offset = Number(text);
  if (offset < 0 || !Number.isSafeInteger(offset)) {
    throw new DenbdError(
      "invalid",
      "Parameter 'offset' expects a non-negative number below 2^64\n" +
        "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n" +
        "and exabytes, respectively.",
    );
  }
  return offset;
}

/**
 * --cache, -n (its alias for "none": the two together are refused, as
 * qemu-nbd refuses them) and --aio (checked as qemu-nbd checks it, with no
 * effect: see its help).
 */
function resolveCache(
  cache: string | undefined,
  nocache: boolean,
  aio: string | undefined,
  file: string | null,
): (typeof CACHE_MODES)[keyof typeof CACHE_MODES] {
  if (cache !== undefined && nocache) {
    throw new UsageError("-n and --cache can only be specified once");
  }
  const mode = CACHE_MODES[nocache ? "none" : (cache ?? "writeback") as keyof typeof CACHE_MODES];
  if (aio !== undefined && !(AIO_MODES as readonly string[]).includes(aio)) {
    throw new DenbdError("invalid", `Invalid aio mode '${aio}'`);
  }
  if (aio === "native" && !mode.direct) {
    throw new DenbdError(
      "invalid",
      `Failed to blk_new_open '${file ?? ""}': ` +
        "aio=native was specified, but it requires cache.direct=on, which was not specified.",
    );
  }
  return mode;
}

/** --detect-zeroes, with qemu-nbd's messages (unmap needs --discard=unmap). */
function resolveDetectZeroes(
  text: string | undefined,
  discard: "ignore" | "unmap",
): (typeof DETECT_ZEROES_MODES)[number] {
  const mode = text ?? "off";
  if (!(DETECT_ZEROES_MODES as readonly string[]).includes(mode)) {
    throw new DenbdError(
      "invalid",
      `Failed to parse detect_zeroes mode: invalid parameter value: ${mode}`,
    );
  }
  if (mode === "unmap" && discard !== "unmap") {
    throw new DenbdError("invalid", DETECT_ZEROES_UNMAP_NEEDS_DISCARD);
  }
  return mode as (typeof DETECT_ZEROES_MODES)[number];
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

/** An option argument that is JSON (it starts with '{'), with QEMU's errors. */
function parseJsonArgument(text: string): JsonValue {
  const [first] = new JsonStreamParser().feed(new TextEncoder().encode(text));
  if (!first) throw new DenbdError("invalid", "JSON parse error, premature EOI");
  if ("error" in first) throw new DenbdError("invalid", first.error);
  return first.value;
}

/** --object: each created as qemu-nbd creates it (keyval or JSON, `qom-type` implied). */
async function createObjects(daemon: Daemon, objects: readonly string[]): Promise<void> {
  for (const text of objects) {
    const json = isJsonArgument(text);
    const value = json ? parseJsonArgument(text) : parseKeyval(text, QSD_IMPLIED_KEYS.object);
    await daemon.objectAdd(validateInput(ObjectOptions, value, json ? "json" : "keyval"));
  }
}

/** --tls-creds names server credentials: checked before the image opens, as qemu-nbd does. */
function checkTlsCredentials(daemon: Daemon, id: string): void {
  try {
    daemon.serverTlsCredentials(id);
  } catch (error) {
    throw new DenbdError(kindOf(error), `Failed to get TLS creds: ${messageOf(error)}`);
  }
}

/**
 * Open the image as the node to export, warning as qemu-nbd does for a
 * writable image whose format was probed as raw. Says what is degraded when
 * FFI is not permitted.
 */
async function openImage(
  daemon: Daemon,
  file: string,
  settings: ServeSettings,
  log: Logger,
): Promise<OpenedImage> {
  const opened = await openServeImage(daemon, {
    file,
    imageOpts: settings.imageOpts,
    format: settings.format,
    readOnly: settings.readOnly,
    direct: settings.cache.direct,
    noFlush: settings.cache.noFlush,
    discard: settings.discard,
    detectZeroes: settings.detectZeroes,
    offset: settings.offset,
    snapshot: settings.snapshot,
    loadSnapshot: settings.loadSnapshot,
  });
  if (opened.probedRaw && !settings.readOnly) log.verbatim("warn", probedRawWarning(file));
  if (settings.readOnly && loadLibc() === null) {
    log.warn(
      `without FFI (--allow-ffi), '${file}' is served with no image lock and no hole ` +
        "detection (every block is reported as data)",
    );
  }
  return opened;
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
        "tls-creds": settings.tlsCreds,
        "tls-authz": settings.tlsAuthz,
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
  if (settings.fork && !isForkChild()) return await runForkParent(["serve", ...args]);
  const log = new Logger(loggerOptionsOf(settings.log));
  const demo = settings.file === null ? await createDemoImage() : null;
  const file = settings.file ?? demo!.path;
  const daemon = new Daemon(log);
  const stop = new StopSignal();
  let pidFile: PidFile | undefined;
  let image: OpenedImage | undefined;
  const monitors = new MonitorHost(daemon, serveMonitorCommands(), () => {});
  try {
    await createObjects(daemon, settings.objects);
    if (settings.tlsCreds !== undefined) checkTlsCredentials(daemon, settings.tlsCreds);
    image = await openImage(
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
      id: EXPORTED_NODE,
      "node-name": EXPORTED_NODE,
      name: settings.exportName,
      description: settings.description,
      writable: !settings.readOnly,
      writethrough: settings.cache.writethrough,
      "allocation-depth": settings.allocationDepth,
      bitmaps: [...settings.bitmaps],
    });
    if (settings.qmp) {
      await monitors.addSocket({ id: "qmp", address: settings.qmp, wait: false });
      monitors.addMonitor("qmp");
    }
    // Locked while serving; left in place at exit, as qemu-nbd leaves it.
    if (settings.pidFile) pidFile = await writePidFile(settings.pidFile);
    if (settings.fork) signalForkReady();
    log.debug(
      `serving '${file}' as export '${settings.exportName}' on ${formatAddress(bound)}` +
        (settings.readOnly ? " (read-only)" : ""),
    );
    log.debug(`stopping: ${await stop.requested}`);
  } catch (error) {
    // A failure once logging is set up is a log record: one JSON object with --log-format=json.
    if (settings.log.format !== "json") throw error;
    log.error(messageOf(error));
    return 1;
  } finally {
    stop.dispose();
    pidFile?.release(false);
    await monitors.close();
    await daemon.shutdown("answered");
    await image?.cleanup();
    await demo?.remove();
  }
  return 0;
}

/** `denbd serve`, for the dispatcher. */
export const serveCommand: Subcommand = {
  summary: "export a disk image over NBD (a qemu-nbd drop-in)",
  run: runServe,
  help: serveHelp,
  flags: SERVE_FLAGS,
};
