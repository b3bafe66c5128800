/**
 * GnuTLS (libgnutls.so.30) through `Deno.dlopen`: the one table of the
 * symbols denbd calls and the constants it passes, plus the small helpers
 * every caller needs (C strings, out-parameters, error text).
 *
 * Why GnuTLS: it is the engine QEMU itself uses, so priority strings, the
 * distinguished-name text authz matches, the PSK key file and the X.509
 * directory layout all behave as they do in qemu-nbd and
 * qemu-storage-daemon. The runtime's own TLS (rustls behind `Deno.listenTls`,
 * `Deno.startTls` and `node:tls`) cannot do server-side STARTTLS with
 * client-certificate verification that refuses a foreign CA, nor PSK.
 *
 * The library is opened on first use; {@linkcode gnutls} throws a DenbdError
 * when it is missing or FFI is not permitted.
 *
 * @module
 */

import { DenbdError, messageOf } from "../errors.ts";

/** The shared object loaded (Debian 12 ships GnuTLS 3.7 under this soname). */
const LIBRARY = "libgnutls.so.30";

/** Every GnuTLS function denbd calls, with its C signature in Deno's FFI types. */
export const SYMBOLS = {
  gnutls_strerror: { parameters: ["i32"], result: "pointer" },
  gnutls_error_is_fatal: { parameters: ["i32"], result: "i32" },
  // Sessions.
  gnutls_init: { parameters: ["buffer", "u32"], result: "i32" },
  gnutls_deinit: { parameters: ["pointer"], result: "void" },
  gnutls_priority_set_direct: { parameters: ["pointer", "buffer", "buffer"], result: "i32" },
  gnutls_credentials_set: { parameters: ["pointer", "i32", "pointer"], result: "i32" },
  gnutls_certificate_server_set_request: { parameters: ["pointer", "i32"], result: "void" },
  gnutls_transport_set_ptr: { parameters: ["pointer", "pointer"], result: "void" },
  gnutls_transport_set_push_function: { parameters: ["pointer", "function"], result: "void" },
  gnutls_transport_set_pull_function: { parameters: ["pointer", "function"], result: "void" },
  gnutls_transport_set_pull_timeout_function: {
    parameters: ["pointer", "function"],
    result: "void",
  },
  gnutls_transport_set_errno: { parameters: ["pointer", "i32"], result: "void" },
  gnutls_handshake: { parameters: ["pointer"], result: "i32" },
  gnutls_record_recv: { parameters: ["pointer", "buffer", "usize"], result: "isize" },
  gnutls_record_send: { parameters: ["pointer", "buffer", "usize"], result: "isize" },
  gnutls_record_check_pending: { parameters: ["pointer"], result: "usize" },
  gnutls_bye: { parameters: ["pointer", "i32"], result: "i32" },
  gnutls_protocol_get_version: { parameters: ["pointer"], result: "i32" },
  gnutls_protocol_get_name: { parameters: ["i32"], result: "pointer" },
  gnutls_cipher_get: { parameters: ["pointer"], result: "i32" },
  gnutls_cipher_get_name: { parameters: ["i32"], result: "pointer" },
  // Peer checks.
  gnutls_certificate_verify_peers2: { parameters: ["pointer", "buffer"], result: "i32" },
  gnutls_certificate_get_peers: { parameters: ["pointer", "buffer"], result: "pointer" },
  gnutls_psk_server_get_username: { parameters: ["pointer"], result: "pointer" },
  // X.509 certificates.
  gnutls_x509_crt_init: { parameters: ["buffer"], result: "i32" },
  gnutls_x509_crt_deinit: { parameters: ["pointer"], result: "void" },
  gnutls_x509_crt_import: { parameters: ["pointer", "pointer", "i32"], result: "i32" },
  gnutls_x509_crt_list_import: {
    parameters: ["buffer", "buffer", "buffer", "i32", "u32"],
    result: "i32",
  },
  gnutls_x509_crt_list_verify: {
    parameters: ["buffer", "u32", "buffer", "u32", "pointer", "u32", "u32", "buffer"],
    result: "i32",
  },
  gnutls_x509_crt_get_dn: { parameters: ["pointer", "buffer", "buffer"], result: "i32" },
  gnutls_x509_crt_check_hostname: { parameters: ["pointer", "buffer"], result: "u32" },
  gnutls_x509_crt_get_expiration_time: { parameters: ["pointer"], result: "i64" },
  gnutls_x509_crt_get_activation_time: { parameters: ["pointer"], result: "i64" },
  gnutls_x509_crt_get_basic_constraints: {
    parameters: ["pointer", "buffer", "buffer", "buffer"],
    result: "i32",
  },
  gnutls_x509_crt_get_key_usage: { parameters: ["pointer", "buffer", "buffer"], result: "i32" },
  gnutls_x509_crt_get_key_purpose_oid: {
    parameters: ["pointer", "u32", "buffer", "buffer", "buffer"],
    result: "i32",
  },
  // Certificate credentials.
  gnutls_certificate_allocate_credentials: { parameters: ["buffer"], result: "i32" },
  gnutls_certificate_free_credentials: { parameters: ["pointer"], result: "void" },
  gnutls_certificate_set_x509_trust_file: {
    parameters: ["pointer", "buffer", "i32"],
    result: "i32",
  },
  gnutls_certificate_set_x509_system_trust: { parameters: ["pointer"], result: "i32" },
  gnutls_certificate_set_x509_key_file2: {
    parameters: ["pointer", "buffer", "buffer", "i32", "buffer", "u32"],
    result: "i32",
  },
  gnutls_certificate_set_x509_crl_file: {
    parameters: ["pointer", "buffer", "i32"],
    result: "i32",
  },
  gnutls_certificate_set_dh_params: { parameters: ["pointer", "pointer"], result: "void" },
  // DH parameters.
  gnutls_dh_params_init: { parameters: ["buffer"], result: "i32" },
  gnutls_dh_params_deinit: { parameters: ["pointer"], result: "void" },
  gnutls_dh_params_import_pkcs3: { parameters: ["pointer", "buffer", "i32"], result: "i32" },
  // PSK credentials.
  gnutls_psk_allocate_server_credentials: { parameters: ["buffer"], result: "i32" },
  gnutls_psk_free_server_credentials: { parameters: ["pointer"], result: "void" },
  gnutls_psk_set_server_credentials_file: { parameters: ["pointer", "buffer"], result: "i32" },
  gnutls_psk_set_server_dh_params: { parameters: ["pointer", "pointer"], result: "void" },
  gnutls_psk_allocate_client_credentials: { parameters: ["buffer"], result: "i32" },
  gnutls_psk_free_client_credentials: { parameters: ["pointer"], result: "void" },
  gnutls_psk_set_client_credentials: {
    parameters: ["pointer", "buffer", "buffer", "i32"],
    result: "i32",
  },
  // Anonymous credentials.
  gnutls_anon_allocate_server_credentials: { parameters: ["buffer"], result: "i32" },
  gnutls_anon_free_server_credentials: { parameters: ["pointer"], result: "void" },
  gnutls_anon_set_server_dh_params: { parameters: ["pointer", "pointer"], result: "void" },
  gnutls_anon_allocate_client_credentials: { parameters: ["buffer"], result: "i32" },
  gnutls_anon_free_client_credentials: { parameters: ["pointer"], result: "void" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The loaded library's functions. */
export type GnuTls = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** Constants of gnutls.h and x509.h that denbd passes or tests. */
export const Gnutls = {
  // gnutls_init flags.
  SERVER: 1,
  CLIENT: 1 << 1,
  NONBLOCK: 1 << 3,
  // Credential types.
  CRD_CERTIFICATE: 1,
  CRD_ANON: 2,
  CRD_PSK: 4,
  // Certificate requests of a server.
  CERT_REQUEST: 1,
  // gnutls_bye.
  SHUT_WR: 1,
  // Encodings.
  X509_FMT_DER: 0,
  X509_FMT_PEM: 1,
  PSK_KEY_HEX: 1,
  // Verification status bits.
  CERT_INVALID: 1 << 1,
  CERT_REVOKED: 1 << 5,
  CERT_SIGNER_NOT_FOUND: 1 << 6,
  CERT_INSECURE_ALGORITHM: 1 << 8,
  // Key usage bits.
  KEY_DIGITAL_SIGNATURE: 128,
  KEY_KEY_CERT_SIGN: 4,
  // Error codes.
  E_AGAIN: -28,
  E_INTERRUPTED: -52,
  E_SHORT_MEMORY_BUFFER: -51,
  E_REQUESTED_DATA_NOT_AVAILABLE: -56,
  E_PREMATURE_TERMINATION: -110,
} as const;

/** Key purpose OIDs (x509.h's GNUTLS_KP_*). */
export const KeyPurpose = {
  TLS_WWW_SERVER: "1.3.6.1.5.5.7.3.1",
  TLS_WWW_CLIENT: "1.3.6.1.5.5.7.3.2",
  ANY: "2.5.29.37.0",
} as const;

/** errno values GnuTLS is told through gnutls_transport_set_errno. */
export const TransportErrno = { EAGAIN: 11 } as const;

/** Size of gnutls_datum_t on 64-bit Linux: a pointer and an unsigned int, padded. */
export const DATUM_SIZE = 16;

let library: GnuTls | undefined;

/** The GnuTLS functions, loading the library on first use. */
export function gnutls(): GnuTls {
  if (library) return library;
  try {
    library = Deno.dlopen(LIBRARY, SYMBOLS).symbols;
  } catch (error) {
    throw new DenbdError(
      "not-supported",
      `TLS needs ${LIBRARY} (GnuTLS): ${messageOf(error)}`,
      { cause: error },
    );
  }
  return library;
}

const encoder = new TextEncoder();

/** `text` as a NUL-terminated C string. */
export function cString(text: string): Uint8Array<ArrayBuffer> {
  const encoded = encoder.encode(text);
  const bytes = new Uint8Array(encoded.length + 1);
  bytes.set(encoded);
  return bytes;
}

/** The text of a C string, or null for a null pointer. */
export function readCString(pointer: Deno.PointerValue): string | null {
  return pointer === null ? null : Deno.UnsafePointerView.getCString(pointer);
}

/** GnuTLS's text for error code `code`, e.g. "Decryption has failed.". */
export function errorText(code: number): string {
  return readCString(gnutls().gnutls_strerror(code)) ?? `GnuTLS error ${code}`;
}

/** A one-pointer out-parameter for functions such as gnutls_init. */
export function pointerSlot(): BigUint64Array<ArrayBuffer> {
  return new BigUint64Array(1);
}

/** The pointer stored in `slot` by GnuTLS. */
export function slotPointer(slot: BigUint64Array): Deno.PointerValue {
  return Deno.UnsafePointer.create(slot[0]);
}

/** A gnutls_datum_t describing `bytes` (which must stay alive while GnuTLS reads it). */
export function datum(bytes: Uint8Array<ArrayBuffer>): Uint8Array<ArrayBuffer> {
  const struct = new Uint8Array(DATUM_SIZE);
  const view = new DataView(struct.buffer);
  view.setBigUint64(0, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(bytes))), true);
  view.setUint32(8, bytes.length, true);
  return struct;
}
