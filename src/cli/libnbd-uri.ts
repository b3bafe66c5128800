/**
 * The URI of an export written as libnbd's nbd_get_uri writes it, which is
 * what nbdinfo prints: `nbds` when TLS was required or negotiated, the PSK
 * username as `user@`, the host as the user wrote it (IPv6 in brackets), the
 * port always given, the export name escaped as libxml2 escapes a URI path,
 * then a Unix socket path, `tls-certificates` and `tls-psk-file` as they are
 * (libnbd 1.14 keeps no other TLS setting).
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

/**
 * The URI of export `exportName` on the server `uri` names; `tlsNegotiated`
 * says whether the connection ran over TLS.
 */
export function libnbdUri(uri: NbdUri, exportName: string, tlsNegotiated = false): string {
  const scheme = uri.tls || tlsNegotiated ? "nbds" : "nbd";
  const settings = uri.tlsSettings ?? {};
  const user = settings.username === undefined ? "" : `${escape(settings.username)}@`;
  const path = `/${escape(exportName)}`;
  const query = [
    ...(uri.address.type === "unix" ? [`socket=${uri.address.path}`] : []),
    ...(settings.certificates === undefined ? [] : [`tls-certificates=${settings.certificates}`]),
    ...(settings.pskFile === undefined ? [] : [`tls-psk-file=${settings.pskFile}`]),
  ];
  const search = query.length ? `?${query.join("&")}` : "";
  if (uri.address.type === "unix") return `${scheme}+unix://${user}${path}${search}`;
  const { host, port } = uri.address;
  return `${scheme}://${user}${host.includes(":") ? `[${host}]` : host}:${port}${path}${search}`;
}

/** Percent-encode (upper-case hex, UTF-8 bytes) every character libxml2 would. */
function escape(text: string): string {
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
