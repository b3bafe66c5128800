/**
 * NBD URIs (doc/uri.md in NetworkBlockDevice/nbd): `nbd://host[:port]/export`,
 * `nbd+unix:///export?socket=PATH`, and the TLS forms `nbds://` and
 * `nbds+unix://`, which require TLS. The TLS settings are read as libnbd
 * reads them: `user@` is the PSK username, `tls-certificates=DIR` and
 * `tls-psk-file=FILE` (libnbd 1.14), and the URI standard's `tls-hostname=`
 * and `tls-verify-peer=` (libnbd 1.22 reads them too). As in libnbd, they
 * only matter when TLS is used: `nbd://h/?tls-certificates=DIR` stays plain
 * text, and other query parameters are ignored.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseNbdUri } from "./uri.ts";
 * assert.equal(parseNbdUri("nbd://localhost/disk").exportName, "disk");
 * ```
 * @module
 */

import { DenbdError } from "../../errors.ts";
import type { SocketAddress } from "../../net/socket-address.ts";

/** The IANA port for NBD, used when a URI names none. */
export const NBD_DEFAULT_PORT = 10809;

/** The URI schemes of the NBD URI standard, and what each means. */
const SCHEMES = {
  "nbd:": { transport: "inet", tls: false },
  "nbds:": { transport: "inet", tls: true },
  "nbd+unix:": { transport: "unix", tls: false },
  "nbds+unix:": { transport: "unix", tls: true },
} as const;

/** How the client does TLS, as a URI says it (every field optional). */
export interface UriTlsSettings {
  /** X.509 directory (ca-cert.pem, optional client-cert.pem + client-key.pem, ca-crl.pem). */
  readonly certificates?: string;
  /** PSK keys file of `user:hexkey` lines; PSK is used instead of X.509 when set. */
  readonly pskFile?: string;
  /** PSK username (the URI's `user@`). */
  readonly username?: string;
  /** The name the server certificate must match instead of the URI's host. */
  readonly hostname?: string;
  /** Check the server certificate (default true). */
  readonly verifyPeer?: boolean;
}

/** A parsed NBD URI. */
export interface NbdUri {
  /** Where the server listens. */
  readonly address: SocketAddress;
  /** The export name: the path without its leading "/", percent-decoded. */
  readonly exportName: string;
  /** TLS is required (nbds schemes). */
  readonly tls: boolean;
  /** TLS settings the URI gives; absent when it gives none. */
  readonly tlsSettings?: UriTlsSettings;
}

/**
 * The TLS query parameters: each one's setting and how its value is read.
 * `tls-verify-peer` takes the URI standard's 0 and 1 and the words libnbd's
 * boolean parser knows.
 */
const TLS_PARAMETERS = {
  "tls-certificates": { setting: "certificates", read: nonEmpty },
  "tls-psk-file": { setting: "pskFile", read: nonEmpty },
  "tls-hostname": { setting: "hostname", read: nonEmpty },
  "tls-verify-peer": { setting: "verifyPeer", read: booleanValue },
} as const satisfies Record<
  string,
  { setting: keyof UriTlsSettings; read: (value: string, name: string) => string | boolean }
>;

/** Spellings of a boolean query value, as libnbd and QEMU accept them. */
const BOOLEAN_WORDS: Readonly<Record<string, boolean>> = {
  "1": true,
  "true": true,
  "yes": true,
  "on": true,
  "0": false,
  "false": false,
  "no": false,
  "off": false,
};

/** Parse `text` as an NBD URI; throws kind "invalid" with the reason. */
export function parseNbdUri(text: string): NbdUri {
  const { rest, userinfo } = splitUserinfo(text);
  let url: URL;
  try {
    url = new URL(rest);
  } catch {
    // A socket's path where a URI belongs: nbdinfo's hint, with the path filled in.
    const hint = /^\.{0,2}\//.test(text)
      ? `; to open a local socket use "nbd+unix:///?socket=${text}"`
      : "";
    throw new DenbdError(
      "invalid",
      `'${text}' is not a URI (expected nbd://HOST[:PORT]/EXPORT)${hint}`,
    );
  }
  const scheme = SCHEMES[url.protocol as keyof typeof SCHEMES];
  if (!scheme) {
    throw new DenbdError(
      "invalid",
      `unsupported URI scheme '${url.protocol}' (expected ${Object.keys(SCHEMES).join(" ")})`,
    );
  }
  const exportName = decodeComponent(url.pathname.replace(/^\//, ""), text);
  const query = parseQuery(url.search, text);
  const tlsSettings = parseTlsSettings(query, userinfo, text);
  const common = { exportName, tls: scheme.tls, ...(tlsSettings ? { tlsSettings } : {}) };
  if (scheme.transport === "unix") {
    const socket = query.get("socket");
    if (!socket) throw new DenbdError("invalid", `'${text}' needs a ?socket=PATH parameter`);
    return { address: { type: "unix", path: socket }, ...common };
  }
  if (query.has("socket")) {
    throw new DenbdError(
      "invalid",
      `'${text}': the socket parameter needs an nbd+unix:// URI (nbd+unix:///EXPORT?socket=PATH)`,
    );
  }
  if (!url.hostname) throw new DenbdError("invalid", `'${text}' names no host`);
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  const port = url.port ? Number(url.port) : NBD_DEFAULT_PORT;
  return { address: { type: "inet", host, port }, ...common };
}

/**
 * Take the userinfo (`user@`) out of the authority before the URL parser sees
 * it: WHATWG URLs refuse a userinfo without a host, which libnbd's own example
 * `nbds+unix://alice@/?socket=...` has. The userinfo is returned percent-decoded.
 */
function splitUserinfo(text: string): { rest: string; userinfo?: string } {
  const match = /^([A-Za-z][A-Za-z0-9+.-]*:\/\/)([^/?#@]*)@/.exec(text);
  if (!match) return { rest: text };
  return {
    rest: match[1] + text.slice(match[0].length),
    userinfo: decodeComponent(match[2], text),
  };
}

/** The TLS settings of a URI's query and userinfo, or undefined when it has none. */
function parseTlsSettings(
  query: Map<string, string>,
  userinfo: string | undefined,
  text: string,
): UriTlsSettings | undefined {
  const settings: Record<string, string | boolean> = {};
  if (userinfo) settings.username = userinfo;
  for (const [name, { setting, read }] of Object.entries(TLS_PARAMETERS)) {
    const value = query.get(name);
    if (value !== undefined) settings[setting] = read(value, `'${text}': ${name}`);
  }
  return Object.keys(settings).length ? settings as UriTlsSettings : undefined;
}

function nonEmpty(value: string, where: string): string {
  if (value === "") throw new DenbdError("invalid", `${where} needs a value`);
  return value;
}

function booleanValue(value: string, where: string): boolean {
  const meaning = BOOLEAN_WORDS[value.toLowerCase()];
  if (meaning === undefined) {
    throw new DenbdError(
      "invalid",
      `${where}: '${value}' is not a boolean (expected ${Object.keys(BOOLEAN_WORDS).join(", ")})`,
    );
  }
  return meaning;
}

/**
 * The URI of an export, close to how libnbd prints it: scheme, `user@`, host
 * and port (always given), the export name, then the socket and TLS query
 * parameters, all percent-encoded except for "/". {@linkcode parseNbdUri}
 * gives back the same URI.
 */
export function formatNbdUri(uri: NbdUri): string {
  const secure = uri.tls ? "s" : "";
  const settings = uri.tlsSettings ?? {};
  const user = settings.username === undefined ? "" : `${encodeURIComponent(settings.username)}@`;
  const path = `/${encodePath(uri.exportName)}`;
  const query: [string, string][] = uri.address.type === "unix"
    ? [["socket", uri.address.path]]
    : [];
  for (const [name, { setting }] of Object.entries(TLS_PARAMETERS)) {
    const value = settings[setting];
    if (value !== undefined) {
      query.push([name, value === true ? "1" : value === false ? "0" : value]);
    }
  }
  const search = query.length
    ? `?${query.map(([name, value]) => `${name}=${encodePath(value)}`).join("&")}`
    : "";
  if (uri.address.type === "unix") return `nbd${secure}+unix://${user}${path}${search}`;
  const { host, port } = uri.address;
  return `nbd${secure}://${user}${host.includes(":") ? `[${host}]` : host}:${port}${path}${search}`;
}

/** Percent-encode `text` for a URI path or query value, keeping "/" as it is. */
function encodePath(text: string): string {
  return encodeURIComponent(text).replaceAll("%2F", "/");
}

/**
 * The query parameters of a URI as RFC 3986 reads them: "+" is a plus sign,
 * not a space (URLSearchParams would turn a socket "/tmp/a+b" into "/tmp/a b").
 * The first of repeated parameters counts.
 */
function parseQuery(search: string, text: string): Map<string, string> {
  const parameters = new Map<string, string>();
  for (const pair of search.replace(/^\?/, "").split("&")) {
    if (!pair) continue;
    const equals = pair.indexOf("=");
    const key = decodeComponent(equals < 0 ? pair : pair.slice(0, equals), text);
    const value = equals < 0 ? "" : decodeComponent(pair.slice(equals + 1), text);
    if (!parameters.has(key)) parameters.set(key, value);
  }
  return parameters;
}

function decodeComponent(component: string, text: string): string {
  try {
    return decodeURIComponent(component);
  } catch {
    throw new DenbdError("invalid", `'${text}' has a malformed percent-encoding`);
  }
}
