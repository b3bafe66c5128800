/**
 * The paragraph of `--help` that says how the client subcommands (list, info,
 * map, dump, copy) name an export: the NBD URI forms and the TLS settings
 * libnbd reads from them.
 *
 * @module
 */

/** The NBD URI forms and their TLS parameters, one line each. */
export const NBD_URI_HELP: readonly string[] = [
  "NBD URIs: nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH, and nbds:// or",
  "nbds+unix:// for TLS (required: never plain text), with libnbd's parameters",
  "?tls-certificates=DIR (X.509: ca-cert.pem, client-cert.pem + client-key.pem; default the",
  "system's CAs), ?tls-psk-file=FILE (PSK, as USER@, default $LOGNAME), ?tls-hostname=NAME",
  "(the name the server certificate must have) and ?tls-verify-peer=0 (no certificate check).",
];
