/**
 * NBD URIs (doc/uri.md in NetworkBlockDevice/nbd): `nbd://host[:port]/export`,
 * `nbd+unix:///export?socket=PATH`, and the TLS forms `nbds://` and
 * `nbds+unix://`, which are parsed here and refused at connect time until
 * TLS support lands.
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

/** A parsed NBD URI. */
export interface NbdUri {
  /** Where the server listens. */
  readonly address: SocketAddress;
  /** The export name: the path without its leading "/", percent-decoded. */
  readonly exportName: string;
  /** TLS is required (nbds schemes). */
  readonly tls: boolean;
}

/** Parse `text` as an NBD URI; throws kind "invalid" with the reason. */
export function parseNbdUri(text: string): NbdUri {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new DenbdError("invalid", `'${text}' is not a URI (expected nbd://HOST[:PORT]/EXPORT)`);
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
  if (scheme.transport === "unix") {
    const socket = query.get("socket");
    if (!socket) throw new DenbdError("invalid", `'${text}' needs a ?socket=PATH parameter`);
    return { address: { type: "unix", path: socket }, exportName, tls: scheme.tls };
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
  return { address: { type: "inet", host, port }, exportName, tls: scheme.tls };
}

/**
 * The URI of an export, close to how libnbd prints it: scheme, host and port
 * (always given), the export name and socket path percent-encoded except for
 * "/". {@linkcode parseNbdUri} gives back the same address and name.
 */
export function formatNbdUri(uri: NbdUri): string {
  const secure = uri.tls ? "s" : "";
  const path = `/${encodePath(uri.exportName)}`;
  if (uri.address.type === "unix") {
    return `nbd${secure}+unix://${path}?socket=${encodePath(uri.address.path)}`;
  }
  const { host, port } = uri.address;
  return `nbd${secure}://${host.includes(":") ? `[${host}]` : host}:${port}${path}`;
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
