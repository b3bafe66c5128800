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
import { createDemoImage } from "./demo-image.ts";
import { Daemon } from "../daemon/daemon.ts";
import { probeFormat } from "../block/probe.ts";
import { DenbdError } from "../errors.ts";
import { Logger } from "../log.ts";
import { formatAddress } from "../net/socket-address.ts";
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

/** The flags of `denbd serve`, spelled as qemu-nbd spells them. */
export const SERVE_FLAGS = {
  port: { short: "p", value: "PORT", help: "TCP port to listen on", default: "10809" },
  bind: { short: "b", value: "IFACE", help: "address to listen on", default: "0.0.0.0" },
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
    "image is created in a temporary directory, served, and removed on exit.",
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
  const socket = text("socket");
  const address: SocketAddressValue = socket ? { type: "unix", path: socket } : {
    type: "inet",
    host: text("bind")!,
    port: String(parseIntegerFlag(text("port")!, "port", 0, 65535)),
  };
  return {
    file: positionals[0] ?? null,
    format: text("format") ?? null,
    address,
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

/** qemu-nbd checks the description's length itself, with its own wording. */
function checkDescription(description: string | undefined): void {
  if (description !== undefined && encodeString(description).length > NBD_LIMIT.MAX_STRING) {
    throw new DenbdError("invalid", `export description '${description}' too long`);
  }
}

/** Refuse formats `serve` cannot export yet, naming the ones it can. */
async function checkFormat(file: string, format: string | null): Promise<void> {
  const effective = format ?? await probeFormat(file);
  if (!(SUPPORTED_FORMATS as readonly string[]).includes(effective)) {
    const how = format ? `format '${format}'` : `'${file}' looks like ${effective}, which`;
    throw new DenbdError(
      "not-supported",
      `${how} is not supported yet (supported: ${SUPPORTED_FORMATS.join(", ")}); ` +
        `-f raw exports the file's bytes as they are`,
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
  checkDescription(settings.description);
  const log = new Logger({ verbose: settings.verbose });
  const demo = settings.file === null ? await createDemoImage() : null;
  const file = settings.file ?? demo!.path;
  const daemon = new Daemon(log);
  const stop = new StopSignal();
  let pidFile: PidFile | undefined;
  try {
    await checkFormat(file, settings.format);
    await daemon.blockdevAdd({
      driver: "file",
      "node-name": "disk",
      filename: file,
      "read-only": settings.readOnly,
      cache: { direct: settings.cache.direct, "no-flush": settings.cache.noFlush },
      discard: settings.discard,
    });
    const bound = daemon.nbdServerStart(
      {
        addr: settings.address,
        "max-connections": settings.shared,
        "handshake-max-seconds": settings.handshakeLimit,
      },
      {
        onDisconnect: (remaining) => {
          if (!settings.persistent && remaining === 0) stop.request("last client disconnected");
        },
      },
    );
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
