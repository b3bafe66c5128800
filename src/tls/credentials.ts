/**
 * TLS credentials as QEMU's tls-creds-x509, tls-creds-psk and tls-creds-anon
 * objects load them, held as GnuTLS credential objects that sessions share.
 *
 * - X.509: QEMU's directory layout (`ca-cert.pem`, optional `ca-crl.pem` (read by
 *   clients too, as libnbd does),
 *   `server-cert.pem` + `server-key.pem` or optional `client-cert.pem` +
 *   `client-key.pem`, optional `dh-params.pem`), QEMU's sanity checks of the
 *   own and CA certificates at load, and an optional key password.
 * - PSK: the `user:hexkey` lines file; a server hands it to GnuTLS (read at
 *   each handshake), a client looks up its username's key at load.
 * - Anonymous: nothing but optional DH parameters.
 *
 * The priority string is QEMU 7.2's as Debian builds it: "NORMAL" unless
 * given, with "+ANON-DH" appended for anonymous and "+ECDHE-PSK:+DHE-PSK:+PSK"
 * for PSK credentials. Without a DH parameters file no parameters are set:
 * GnuTLS 3.6+ picks RFC 7919 groups itself (QEMU generates 2048-bit
 * parameters at load instead, which takes seconds and gains nothing).
 *
 * Errors are DenbdErrors worded as QEMU words them.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { TlsCredentials } from "./credentials.ts";
 * const credentials = await TlsCredentials.anon({ endpoint: "client" });
 * assert.equal(credentials.priority, "NORMAL:+ANON-DH");
 * credentials.release(); // freed at once: no session holds them
 * ```
 * @module
 */

import { join } from "node:path";
import { DenbdError, osErrorText } from "../errors.ts";
import { cString, datum, errorText, Gnutls, gnutls, pointerSlot, slotPointer } from "./gnutls.ts";
import { readFileLikeGlib } from "../glib-file.ts";
import { checkX509Files } from "./x509-sanity.ts";

/** Which side of a TLS session credentials serve. */
export type TlsEndpoint = "server" | "client";
/** What kind of credentials. */
export type TlsCredentialsKind = "x509" | "psk" | "anon";

/** How to load X.509 credentials. */
export interface X509CredentialsOptions {
  /** Which side the credentials serve. */
  readonly endpoint: TlsEndpoint;
  /** QEMU's directory layout: ca-cert.pem, optional ca-crl.pem, server-cert.pem + server-key.pem
   *  (server), optional client-cert.pem + client-key.pem (client), optional dh-params.pem.
   *  Client only: may be omitted, then the system's trusted CAs are used and no client cert sent. */
  readonly dir?: string;
  /** Server: demand and check a client certificate; client: check the server's. Default true. */
  readonly verifyPeer?: boolean;
  /** Password of an encrypted private key (the daemon takes it from a `secret` object). */
  readonly keyPassword?: string;
  /** GnuTLS priority string; default QEMU's default. */
  readonly priority?: string;
  /** QEMU's sanity-check: check own and CA certificates at load (dates, CA bit, purposes). Default true. */
  readonly sanityCheck?: boolean;
}

/** How to load PSK credentials. */
export interface PskCredentialsOptions {
  /** Which side the credentials serve. */
  readonly endpoint: TlsEndpoint;
  /** The `user:hexkey` lines file (QEMU: DIR/keys.psk; libnbd: tls-psk-file). */
  readonly keysFile: string;
  /** Client: whose key to use (QEMU's default "qemu", libnbd's the login name: the caller decides). */
  readonly username?: string;
  /** Server: optional DH parameters file (QEMU: DIR/dh-params.pem). */
  readonly dhParamsFile?: string;
  /** GnuTLS priority string; default QEMU's default (PSK key exchanges are appended). */
  readonly priority?: string;
}

/** How to make anonymous credentials. */
export interface AnonCredentialsOptions {
  /** Which side the credentials serve. */
  readonly endpoint: TlsEndpoint;
  /** Server: optional DH parameters file. */
  readonly dhParamsFile?: string;
  /** GnuTLS priority string; default QEMU's default (anonymous DH is appended). */
  readonly priority?: string;
}

/** QEMU's default priority (CONFIG_TLS_PRIORITY of Debian's QEMU 7.2). */
export const DEFAULT_PRIORITY = "NORMAL";

/** What each kind of credentials adds to the priority string, and its GnuTLS credential type. */
const KIND_TABLE: Record<TlsCredentialsKind, { extraPriority: string | null; type: number }> = {
  x509: { extraPriority: null, type: Gnutls.CRD_CERTIFICATE },
  psk: { extraPriority: "+ECDHE-PSK:+DHE-PSK:+PSK", type: Gnutls.CRD_PSK },
  anon: { extraPriority: "+ANON-DH", type: Gnutls.CRD_ANON },
};

/** The X.509 directory's file names (QEMU's). */
export const X509_FILES = {
  caCert: "ca-cert.pem",
  caCrl: "ca-crl.pem",
  serverCert: "server-cert.pem",
  serverKey: "server-key.pem",
  clientCert: "client-cert.pem",
  clientKey: "client-key.pem",
  dhParams: "dh-params.pem",
} as const;

/** The PSK keys file in a QEMU credentials directory (`user:hexkey` lines, as psktool writes). */
export const PSK_KEYS_FILE = "keys.psk";

/** The GnuTLS objects behind credentials, and how to free them. */
interface Loaded {
  readonly handle: Deno.PointerValue;
  readonly free: () => void;
}

/**
 * Loaded GnuTLS credentials; errors are DenbdError with QEMU's wording where
 * QEMU has one. Sessions hold a reference: {@linkcode release} frees the
 * GnuTLS objects once the last of them has ended.
 */
export class TlsCredentials {
  /** What kind of credentials. */
  readonly kind: TlsCredentialsKind;
  /** Which side they serve. */
  readonly endpoint: TlsEndpoint;
  /** x509 verifyPeer; false for psk and anon. */
  readonly verifyPeer: boolean;
  /** The full priority string sessions set. */
  readonly priority: string;
  #loaded: Loaded;
  #references = 0;
  #released = false;

  private constructor(
    kind: TlsCredentialsKind,
    endpoint: TlsEndpoint,
    verifyPeer: boolean,
    priority: string | undefined,
    loaded: Loaded,
  ) {
    this.kind = kind;
    this.endpoint = endpoint;
    this.verifyPeer = verifyPeer;
    const extra = KIND_TABLE[kind].extraPriority;
    const base = priority ?? DEFAULT_PRIORITY;
    this.priority = extra ? `${base}:${extra}` : base;
    this.#loaded = loaded;
  }

  /** Load X.509 credentials from a QEMU-layout directory. */
  static async x509(options: X509CredentialsOptions): Promise<TlsCredentials> {
    const server = options.endpoint === "server";
    const dir = options.dir;
    if (dir === undefined && server) {
      throw new DenbdError("invalid", "Missing 'dir' property value");
    }
    const path = async (name: string, required: boolean) =>
      dir === undefined ? undefined : await credentialPath(join(dir, name), required);
    const caCert = await path(X509_FILES.caCert, true);
    // QEMU reads a CRL on the server side only; libnbd's client reads one too, and so does denbd.
    const caCrl = await path(X509_FILES.caCrl, false);
    const cert = await path(server ? X509_FILES.serverCert : X509_FILES.clientCert, server);
    const key = await path(server ? X509_FILES.serverKey : X509_FILES.clientKey, server);
    const dhParams = server ? await path(X509_FILES.dhParams, false) : undefined;
    if (caCert !== undefined && (options.sanityCheck ?? true)) {
      await checkX509Files(server, caCert, cert);
    }
    const lib = gnutls();
    const handle = allocate(lib.gnutls_certificate_allocate_credentials, "'%s'");
    const free = () => lib.gnutls_certificate_free_credentials(handle);
    let dh: Loaded | undefined;
    try {
      if (caCert === undefined) {
        const result = lib.gnutls_certificate_set_x509_system_trust(handle);
        if (result < 0) {
          throw new DenbdError(
            "io",
            `Cannot load the system's trusted CA certificates: ${errorText(result)}`,
          );
        }
      } else {
        const result = lib.gnutls_certificate_set_x509_trust_file(
          handle,
          cString(caCert),
          Gnutls.X509_FMT_PEM,
        );
        if (result < 0) {
          throw new DenbdError(
            "invalid",
            `Cannot load CA certificate '${caCert}': ${errorText(result)}`,
          );
        }
      }
      if (cert !== undefined && key !== undefined) {
        const result = lib.gnutls_certificate_set_x509_key_file2(
          handle,
          cString(cert),
          cString(key),
          Gnutls.X509_FMT_PEM,
          options.keyPassword === undefined ? null : cString(options.keyPassword),
          0,
        );
        if (result < 0) {
          throw new DenbdError(
            "invalid",
            `Cannot load certificate '${cert}' & key '${key}': ${errorText(result)}`,
          );
        }
      }
      if (caCrl !== undefined) {
        const result = lib.gnutls_certificate_set_x509_crl_file(
          handle,
          cString(caCrl),
          Gnutls.X509_FMT_PEM,
        );
        if (result < 0) {
          throw new DenbdError("invalid", `Cannot load CRL '${caCrl}': ${errorText(result)}`);
        }
      }
      if (dhParams !== undefined) {
        dh = await loadDhParams(dhParams);
        lib.gnutls_certificate_set_dh_params(handle, dh.handle);
      }
    } catch (error) {
      free();
      dh?.free();
      throw error;
    }
    return new TlsCredentials(
      "x509",
      options.endpoint,
      options.verifyPeer ?? true,
      options.priority,
      { handle, free: () => (free(), dh?.free()) },
    );
  }

  /** Load PSK credentials from a `user:hexkey` file. */
  static async psk(options: PskCredentialsOptions): Promise<TlsCredentials> {
    const lib = gnutls();
    if (options.endpoint === "server") {
      if (options.username !== undefined) {
        throw new DenbdError("invalid", "username should not be set when endpoint=server");
      }
      const dh = options.dhParamsFile === undefined
        ? undefined
        : await loadDhParams(options.dhParamsFile);
      await credentialPath(options.keysFile, true);
      const handle = allocate(lib.gnutls_psk_allocate_server_credentials, "%s");
      const result = lib.gnutls_psk_set_server_credentials_file(
        handle,
        cString(options.keysFile),
      );
      if (result < 0) {
        lib.gnutls_psk_free_server_credentials(handle);
        dh?.free();
        throw new DenbdError(
          "invalid",
          `Cannot set PSK server credentials: ${errorText(result)}`,
        );
      }
      if (dh) lib.gnutls_psk_set_server_dh_params(handle, dh.handle);
      return new TlsCredentials("psk", "server", false, options.priority, {
        handle,
        free: () => (lib.gnutls_psk_free_server_credentials(handle), dh?.free()),
      });
    }
    await credentialPath(options.keysFile, true);
    const username = options.username ?? "qemu";
    const key = await lookupPskKey(options.keysFile, username);
    const handle = allocate(lib.gnutls_psk_allocate_client_credentials, "%s");
    const keyBytes = new TextEncoder().encode(key);
    const result = lib.gnutls_psk_set_client_credentials(
      handle,
      cString(username),
      datum(keyBytes),
      Gnutls.PSK_KEY_HEX,
    );
    if (result < 0) {
      lib.gnutls_psk_free_client_credentials(handle);
      throw new DenbdError(
        "invalid",
        `Cannot set PSK client credentials: ${errorText(result)}`,
      );
    }
    return new TlsCredentials("psk", "client", false, options.priority, {
      handle,
      free: () => lib.gnutls_psk_free_client_credentials(handle),
    });
  }

  /** Make anonymous (unauthenticated) credentials. */
  static async anon(options: AnonCredentialsOptions): Promise<TlsCredentials> {
    const lib = gnutls();
    if (options.endpoint === "server") {
      const dh = options.dhParamsFile === undefined
        ? undefined
        : await loadDhParams(options.dhParamsFile);
      const handle = allocate(lib.gnutls_anon_allocate_server_credentials, "%s");
      if (dh) lib.gnutls_anon_set_server_dh_params(handle, dh.handle);
      return new TlsCredentials("anon", "server", false, options.priority, {
        handle,
        free: () => (lib.gnutls_anon_free_server_credentials(handle), dh?.free()),
      });
    }
    const handle = allocate(lib.gnutls_anon_allocate_client_credentials, "%s");
    return new TlsCredentials("anon", "client", false, options.priority, {
      handle,
      free: () => lib.gnutls_anon_free_client_credentials(handle),
    });
  }

  /** The GnuTLS credential type (GNUTLS_CRD_*) sessions set. */
  get gnutlsType(): number {
    return KIND_TABLE[this.kind].type;
  }

  /**
   * Take a reference (a session, or a server that starts sessions with
   * them); returns the GnuTLS credentials handle. Throws once the
   * credentials are freed: released with no reference left.
   */
  acquire(): Deno.PointerValue {
    if (this.#released && this.#references === 0) {
      throw new DenbdError("invalid", "TLS credentials have been released");
    }
    this.#references++;
    return this.#loaded.handle;
  }

  /** Drop a reference taken with {@linkcode acquire}. */
  relinquish(): void {
    this.#references--;
    this.#freeIfUnused();
  }

  /**
   * Drop the owner's hold (object-del): the GnuTLS objects are freed once the
   * last reference is dropped too, at once if none is held; idempotent.
   */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#freeIfUnused();
  }

  #freeIfUnused(): void {
    if (this.#released && this.#references === 0) {
      const loaded = this.#loaded;
      this.#loaded = { handle: null, free: () => {} };
      loaded.free();
    }
  }
}

/**
 * `path` when it exists; undefined when it does not and is not `required`;
 * otherwise QEMU's "Unable to access credentials PATH: <reason>".
 */
async function credentialPath(path: string, required: boolean): Promise<string | undefined> {
  try {
    await Deno.stat(path);
    return path;
  } catch (error) {
    if (!required && error instanceof Deno.errors.NotFound) return undefined;
    throw new DenbdError(
      "not-found",
      `Unable to access credentials ${path}: ${osErrorText(error)}`,
      { cause: error },
    );
  }
}

/** Call a GnuTLS allocator taking an out-pointer; QEMU's message (quoted per `format`) on failure. */
function allocate(allocator: (slot: BigUint64Array<ArrayBuffer>) => number, format: string) {
  const slot = pointerSlot();
  const result = allocator(slot);
  if (result < 0) {
    throw new DenbdError(
      "io",
      `Cannot allocate credentials: ${format.replace("%s", errorText(result))}`,
    );
  }
  return slotPointer(slot);
}

/** The hex key of `username` in PSK file `keysFile`, as QEMU looks it up. */
async function lookupPskKey(keysFile: string, username: string): Promise<string> {
  const text = new TextDecoder().decode(
    await readFileLikeGlib(keysFile, `Cannot read PSK file ${keysFile}: `),
  );
  for (const line of text.split("\n")) {
    if (line.startsWith(`${username}:`)) return line.slice(username.length + 1);
  }
  throw new DenbdError("not-found", `Username ${username} not found in PSK file ${keysFile}`);
}

/** DH parameters from a PKCS#3 PEM file, with QEMU's messages. */
async function loadDhParams(path: string): Promise<Loaded> {
  const text = await readFileLikeGlib(path, "");
  const lib = gnutls();
  const slot = pointerSlot();
  const init = lib.gnutls_dh_params_init(slot);
  if (init < 0) {
    throw new DenbdError("io", `Unable to initialize DH parameters: ${errorText(init)}`);
  }
  const handle = slotPointer(slot);
  const result = lib.gnutls_dh_params_import_pkcs3(handle, datum(text), Gnutls.X509_FMT_PEM);
  if (result < 0) {
    lib.gnutls_dh_params_deinit(handle);
    throw new DenbdError(
      "invalid",
      `Unable to load DH parameters from ${path}: ${errorText(result)}`,
    );
  }
  return { handle, free: () => lib.gnutls_dh_params_deinit(handle) };
}
