/**
 * The URI of an export written as libnbd's nbd_get_uri writes it, which is
 * what nbdinfo prints: the host as the user wrote it (IPv6 in brackets), the
 * port always given, the export name escaped as libxml2 escapes a URI path,
 * and a Unix socket path as it is.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { libnbdUri } from "./libnbd-uri.ts";
 * import { parseNbdUri } from "../nbd/client/uri.ts";
 * assert.equal(libnbdUri(parseNbdUri("nbd://localhost/a b"), "a b"), "nbd://localhost:10809/a%20b");
 * ```
 * @module
 */

import type { NbdUri } from "../nbd/client/uri.ts";

/** Bytes libxml2 leaves unescaped in a URI path: unreserved characters and a few delimiters. */
const PATH_SAFE = /[A-Za-z0-9\-_.!~*'()/;@&=+$,]/;

/** The URI of export `exportName` on the server `uri` names. */
export function libnbdUri(uri: NbdUri, exportName: string): string {
  const scheme = uri.tls ? "nbds" : "nbd";
  const path = `/${escapePath(exportName)}`;
  if (uri.address.type === "unix") return `${scheme}+unix://${path}?socket=${uri.address.path}`;
  const { host, port } = uri.address;
  return `${scheme}://${host.includes(":") ? `[${host}]` : host}:${port}${path}`;
}

/** Percent-encode (upper-case hex, UTF-8 bytes) every character libxml2 would. */
function escapePath(text: string): string {
  let result = "";
  for (const character of text) {
    if (PATH_SAFE.test(character)) {
      result += character;
      continue;
    }
    for (const byte of new TextEncoder().encode(character)) {
      result += `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
    }
  }
  return result;
}
