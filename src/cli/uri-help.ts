/**
 * The paragraph of `--help` that says how the client subcommands (list, info,
 * map, dump, copy) name an export: the NBD URI forms and the TLS settings
 * libnbd reads from them, or a server to run for the command.
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
  "In place of a URI, [ CMD ARGS ... ] runs an NBD server as a subprocess through systemd",
  "socket activation (qemu-nbd and nbdkit can), over one connection, and stops it at the",
  "end; put '--' before it so that the command's flags are not taken for denbd's.",
];
