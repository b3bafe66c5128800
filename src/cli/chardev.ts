/**
 * The `--chardev` vocabulary of qemu-storage-daemon 7.2: the options its
 * QemuOpts string may hold and their types, the backends QEMU knows and the
 * ones denbd serves, and what the options say (help, listening address).
 *
 * @module
 */

import { DenbdError } from "../errors.ts";
import type { SocketChardevOptions } from "../daemon/monitors.ts";
import type { SocketAddress } from "../net/socket-address.ts";
import {
  parseQemuOptBool,
  parseQemuOpts,
  type QemuOptsResult,
  type QemuOptType,
} from "../qmp/qemu-opts.ts";

/** The socket chardev backends and the null one are served; QEMU has more. */
export const CHARDEV_BACKENDS = ["socket", "null"] as const;

/** Every chardev backend QEMU 7.2 knows (what `--chardev help` lists in qsd). */
export const QEMU_CHARDEV_BACKENDS: readonly string[] = [
  "pty",
  "udp",
  "memory",
  "file",
  "socket",
  "stdio",
  "ringbuf",
  "null",
  "parallel",
  "pipe",
  "mux",
  "serial",
];

/**
 * The options `--chardev` accepts in qsd 7.2 and their types (`--chardev
 * null,help` lists them). `id` is handled apart and is not in the table.
 */
export const CHARDEV_OPT_TYPES: Readonly<Record<string, QemuOptType>> = {
  abstract: "bool",
  append: "bool",
  backend: "string",
  chardev: "string",
  clipboard: "bool",
  cols: "number",
  debug: "number",
  delay: "bool",
  fd: "string",
  height: "number",
  host: "string",
  ipv4: "bool",
  ipv6: "bool",
  localaddr: "string",
  localport: "string",
  logappend: "bool",
  logfile: "string",
  mouse: "bool",
  mux: "bool",
  name: "string",
  nodelay: "bool",
  path: "string",
  port: "string",
  reconnect: "number",
  rows: "number",
  server: "bool",
  signal: "bool",
  size: "size",
  telnet: "bool",
  tight: "bool",
  "tls-authz": "string",
  "tls-creds": "string",
  tn3270: "bool",
  to: "number",
  wait: "bool",
  websocket: "bool",
  width: "number",
};

/**
 * Parse a `--chardev` argument as qsd does: QemuOpts with the implied name
 * `backend`, checked against {@link CHARDEV_OPT_TYPES}.
 *
 * @throws {KeyvalError} with QEMU's message, hint and earlier warnings.
 */
export function parseChardevOptions(text: string): QemuOptsResult {
  return parseQemuOpts(text, { impliedName: "backend", types: CHARDEV_OPT_TYPES });
}

/** `--chardev socket,help`: the options a chardev may have and their types. */
export function chardevHelp(): string {
  return [
    "chardev options:",
    ...Object.entries(CHARDEV_OPT_TYPES).map(([name, kind]) => `  ${name}=<${kind}>`),
  ]
    .join("\n");
}

/**
 * What a socket chardev named `id` says: where it listens (servers only;
 * denbd does not connect out) and whether it waits for a first client.
 */
export function socketChardev(id: string, parsed: QemuOptsResult): SocketChardevOptions {
  return { id, address: listeningAddress(parsed), wait: !isOff(parsed.values.wait) };
}

function listeningAddress(parsed: QemuOptsResult): SocketAddress {
  const values = parsed.values;
  if (!isOn(values.server)) {
    throw new DenbdError(
      "not-supported",
      "denbd serves QMP only on listening sockets: add server=on",
    );
  }
  if (values.path !== undefined) return { type: "unix", path: values.path };
  if (values.port === undefined) throw new DenbdError("invalid", "chardev: socket: no port given");
  return { type: "inet", host: values.host ?? "0.0.0.0", port: Number(values.port) };
}

/** A boolean option that is given and on. */
function isOn(value: string | undefined): boolean {
  return value !== undefined && parseQemuOptBool(value) === true;
}

/** A boolean option that is given and off. */
function isOff(value: string | undefined): boolean {
  return value !== undefined && parseQemuOptBool(value) === false;
}
