/**
 * The client's TLS, as libnbd does it: the mode (libnbd's LIBNBD_TLS_DISABLE,
 * ALLOW and REQUIRE), the credentials a URI names, the name the server
 * certificate must match, and the STARTTLS step of the handshake, which never
 * falls back to plain text when TLS is required.
 *
 * Where denbd differs from libnbd 1.14 (Debian's), it is stricter, as the NBD
 * URI standard asks ("clients SHOULD verify the server's identity"): libnbd
 * checks the server certificate only when it has a host name (not over a Unix
 * socket) and only with a certificate directory (not with the system's CAs);
 * denbd checks it against the CAs in every case unless `tls-verify-peer=0`,
 * and its name whenever one is known (the URI's host, or `tls-hostname`), as
 * QEMU's client does.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { tlsHostnameOf, tlsModeOf } from "./tls.ts";
 * import { parseNbdUri } from "./uri.ts";
 * assert.equal(tlsModeOf(parseNbdUri("nbds://localhost/disk")), "require");
 * assert.equal(tlsModeOf(parseNbdUri("nbd://localhost/disk")), "disable");
 * assert.equal(tlsModeOf(parseNbdUri("nbd://localhost/disk"), "allow"), "allow");
 * assert.equal(tlsHostnameOf(parseNbdUri("nbds://localhost/disk")), "localhost");
 * ```
 * @module
 */

import { userInfo } from "node:os";
import { join } from "node:path";
import { DenbdError, messageOf } from "../../errors.ts";
import type { ByteStream } from "../../io/byte-stream.ts";
import { TlsCredentials, X509_FILES } from "../../tls/credentials.ts";
import { type NegotiationSession, OptionRefused } from "./negotiation.ts";
import type { NbdUri } from "./uri.ts";

/** What a client does about TLS, by libnbd's names, and what each means. */
export const TLS_MODES = {
  disable: "never use TLS",
  allow: "use TLS if the server agrees, else go on in plain text",
  require: "use TLS or fail; never fall back to plain text",
} as const;

/** A TLS mode: one of {@linkcode TLS_MODES}. */
export type TlsMode = keyof typeof TLS_MODES;

/**
 * Where libnbd looks for certificates when a URI names no directory: the
 * user's own for an ordinary user, the system's for root. A directory counts
 * only if it has a `ca-cert.pem`; without one the system's CAs are used.
 */
function defaultCertificateDirs(): string[] {
  if (Deno.uid() === 0) return ["/etc/pki/libnbd"];
  const home = Deno.env.get("HOME");
  return home ? [join(home, ".pki", "libnbd"), join(home, ".config", "pki", "libnbd")] : [];
}

/**
 * The TLS mode of a connection to `uri`: an nbds URI requires TLS whatever
 * was asked, as libnbd's nbd_connect_uri does; otherwise `requested`, by
 * default "disable" (libnbd's default: `nbd://` stays plain text even with
 * `tls-certificates`).
 */
export function tlsModeOf(uri: NbdUri, requested?: TlsMode): TlsMode {
  return uri.tls ? "require" : requested ?? "disable";
}

/**
 * The name the server certificate must match: `tls-hostname`, else the
 * URI's host; none over a Unix socket without `tls-hostname`.
 */
export function tlsHostnameOf(uri: NbdUri): string | undefined {
  return uri.tlsSettings?.hostname ??
    (uri.address.type === "inet" ? uri.address.host : undefined);
}

/**
 * The PSK username when the URI has no `user@`: `$LOGNAME`, else the name of
 * the account running denbd (libnbd asks getlogin(), which fails without a
 * terminal; the account name is what it would say with one).
 */
export function defaultTlsUsername(): string {
  const logname = Deno.env.get("LOGNAME");
  if (logname) return logname;
  try {
    return userInfo().username;
  } catch (error) {
    throw new DenbdError(
      "invalid",
      `no PSK username: the URI has no user@ and the login name is unknown (${messageOf(error)})`,
    );
  }
}

/**
 * Load the client credentials `uri` names: PSK from `tls-psk-file` (with the
 * URI's username, else {@linkcode defaultTlsUsername}), else X.509 from
 * `tls-certificates` or libnbd's default directories, else the system's
 * trusted CAs. The caller releases them.
 */
export async function loadClientCredentials(uri: NbdUri): Promise<TlsCredentials> {
  const settings = uri.tlsSettings ?? {};
  if (settings.pskFile !== undefined) {
    return await TlsCredentials.psk({
      endpoint: "client",
      keysFile: settings.pskFile,
      username: settings.username ?? defaultTlsUsername(),
    });
  }
  const candidates = settings.certificates !== undefined
    ? [settings.certificates]
    : defaultCertificateDirs();
  let dir: string | undefined;
  for (const candidate of candidates) {
    if (await isFile(join(candidate, X509_FILES.caCert))) {
      dir = candidate;
      break;
    }
  }
  return await TlsCredentials.x509({
    endpoint: "client",
    dir,
    verifyPeer: settings.verifyPeer ?? true,
  });
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

/**
 * The STARTTLS step of a handshake in `mode`: nothing when disabled; else
 * STARTTLS, then `handshake` (the TLS handshake over the plain connection,
 * resolving to the encrypted stream). A server that refuses TLS, or predates
 * fixed newstyle so cannot be asked, is accepted in plain text only in mode
 * "allow"; with "require" the session is ended (NBD_OPT_ABORT after a
 * refusal) and this rejects, so that nothing is ever sent in plain text.
 * Resolves to the TLS stream, or null when the session goes on in plain text.
 */
export async function negotiateTls(
  session: NegotiationSession,
  mode: TlsMode,
  handshake: () => Promise<ByteStream>,
): Promise<ByteStream | null> {
  if (mode === "disable") return null;
  if (!session.fixedNewstyle) {
    if (mode === "allow") return null;
    throw new DenbdError(
      "not-supported",
      "the server does not support fixed newstyle, so it cannot do TLS, and TLS is required",
    );
  }
  let secured: ByteStream | null = null;
  try {
    await session.startTls(async () => secured = await handshake());
  } catch (error) {
    if (!(error instanceof OptionRefused)) throw error;
    if (mode === "allow") return null;
    await session.abort();
    throw new DenbdError(
      "not-supported",
      `${error.message}; TLS is required, so the client does not go on in plain text`,
      { cause: error },
    );
  }
  return secured;
}
