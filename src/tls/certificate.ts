/**
 * X.509 certificates as GnuTLS objects (gnutls_x509_crt_t): importing them
 * from PEM files or from the DER a peer sent, and reading what QEMU checks:
 * validity dates, the CA basic constraint, key usage and purposes, the
 * distinguished name and the hostname match. Also the one mapping from a
 * GnuTLS verification status to QEMU's words for it.
 *
 * @module
 */

import { DenbdError } from "../errors.ts";
import {
  cString,
  datum,
  DATUM_SIZE,
  errorText,
  Gnutls,
  gnutls,
  pointerSlot,
  readCString,
  slotPointer,
} from "./gnutls.ts";

/** Verification status bits and QEMU's reason for each, weakest first (the last set one wins). */
const VERIFY_REASONS: readonly (readonly [number, string])[] = [
  [Gnutls.CERT_INVALID, "The certificate is not trusted"],
  [Gnutls.CERT_SIGNER_NOT_FOUND, "The certificate hasn't got a known issuer"],
  [Gnutls.CERT_REVOKED, "The certificate has been revoked"],
  [Gnutls.CERT_INSECURE_ALGORITHM, "The certificate uses an insecure algorithm"],
];

/**
 * QEMU's reason for a non-zero GnuTLS verification `status`: the most
 * specific of its known bits, else "Invalid certificate".
 */
export function verifyStatusReason(status: number): string {
  let reason = "Invalid certificate";
  for (const [bit, text] of VERIFY_REASONS) if (status & bit) reason = text;
  return reason;
}

/** The most CA certificates read from one file (QEMU's limit too). */
export const MAX_CA_CERTIFICATES = 16;

/** What the basic-constraints extension says. */
export type BasicConstraint = "ca" | "not-ca" | "missing";

/** One GnuTLS certificate object; {@linkcode free} it when done. */
export class X509Certificate {
  /** The gnutls_x509_crt_t. */
  readonly handle: Deno.PointerValue;

  private constructor(handle: Deno.PointerValue) {
    this.handle = handle;
  }

  /** Import the certificate of gnutls_datum_t `datumPointer` holding DER (a peer's certificate). */
  static fromDerDatum(datumPointer: Deno.PointerValue): X509Certificate {
    const certificate = X509Certificate.#create();
    const result = gnutls().gnutls_x509_crt_import(
      certificate.handle,
      datumPointer,
      Gnutls.X509_FMT_DER,
    );
    if (result < 0) {
      certificate.free();
      throw new DenbdError("invalid", `Cannot import certificate: ${errorText(result)}`);
    }
    return certificate;
  }

  /**
   * Import every certificate of PEM text `pem` (at most `max`); resolves to
   * null when GnuTLS refuses the text (the caller words the error).
   */
  static listFromPem(pem: Uint8Array<ArrayBuffer>, max: number): X509Certificate[] | null {
    const handles = new BigUint64Array(max);
    const count = new Uint32Array([max]);
    const result = gnutls().gnutls_x509_crt_list_import(
      handles,
      count,
      pemDatum(pem),
      Gnutls.X509_FMT_PEM,
      0,
    );
    if (result < 0) return null;
    return Array.from(
      handles.subarray(0, count[0]),
      (handle) => new X509Certificate(Deno.UnsafePointer.create(handle)),
    );
  }

  /** Import the first certificate of PEM text `pem`, or GnuTLS's error code when it refuses it. */
  static fromPem(pem: Uint8Array<ArrayBuffer>): X509Certificate | number {
    const certificate = X509Certificate.#create();
    const text = pemDatum(pem);
    const result = gnutls().gnutls_x509_crt_import(
      certificate.handle,
      Deno.UnsafePointer.of(text),
      Gnutls.X509_FMT_PEM,
    );
    if (result < 0) {
      certificate.free();
      return result;
    }
    return certificate;
  }

  static #create(): X509Certificate {
    const slot = pointerSlot();
    const result = gnutls().gnutls_x509_crt_init(slot);
    if (result < 0) {
      throw new DenbdError("io", `Cannot initialize certificate: ${errorText(result)}`);
    }
    return new X509Certificate(slotPointer(slot));
  }

  /** End of validity, in seconds since the epoch. */
  get expiration(): number {
    return Number(gnutls().gnutls_x509_crt_get_expiration_time(this.handle));
  }

  /** Start of validity, in seconds since the epoch. */
  get activation(): number {
    return Number(gnutls().gnutls_x509_crt_get_activation_time(this.handle));
  }

  /** The subject DN as GnuTLS prints it (gnutls_x509_crt_get_dn), e.g. "CN=alice,O=Example,C=GB". */
  get distinguishedName(): string {
    for (let size = 1024;;) {
      const buffer = new Uint8Array(size);
      const length = new BigUint64Array([BigInt(size)]);
      const result = gnutls().gnutls_x509_crt_get_dn(this.handle, buffer, length);
      if (result === Gnutls.E_SHORT_MEMORY_BUFFER) {
        size = Number(length[0]) + 1;
        continue;
      }
      if (result < 0) {
        throw new DenbdError(
          "invalid",
          `Cannot get client distinguished name: ${errorText(result)}`,
        );
      }
      return new TextDecoder().decode(buffer.subarray(0, buffer.indexOf(0)));
    }
  }

  /** Whether the certificate names `hostname` (a DNS name or an IP address). */
  matchesHostname(hostname: string): boolean {
    return gnutls().gnutls_x509_crt_check_hostname(this.handle, cString(hostname)) !== 0;
  }

  /** The basic-constraints CA flag, or a GnuTLS error code when it cannot be read. */
  basicConstraint(): BasicConstraint | number {
    const result = gnutls().gnutls_x509_crt_get_basic_constraints(
      this.handle,
      null,
      null,
      null,
    );
    if (result === Gnutls.E_REQUESTED_DATA_NOT_AVAILABLE) return "missing";
    if (result < 0) return result;
    return result > 0 ? "ca" : "not-ca";
  }

  /** The key-usage bits and whether they are critical; null when absent; a code on error. */
  keyUsage(): { usage: number; critical: boolean } | null | number {
    const usage = new Uint32Array(1);
    const critical = new Uint32Array(1);
    const result = gnutls().gnutls_x509_crt_get_key_usage(this.handle, usage, critical);
    if (result === Gnutls.E_REQUESTED_DATA_NOT_AVAILABLE) return null;
    if (result < 0) return result;
    return { usage: usage[0], critical: critical[0] !== 0 };
  }

  /** The extended key purpose OIDs and whether any is critical; a code on error. */
  keyPurposes(): { oids: string[]; critical: boolean } | number {
    const oids: string[] = [];
    let critical = false;
    for (let index = 0;; index++) {
      const buffer = new Uint8Array(256);
      const size = new BigUint64Array([BigInt(buffer.length)]);
      const isCritical = new Uint32Array(1);
      const result = gnutls().gnutls_x509_crt_get_key_purpose_oid(
        this.handle,
        index,
        buffer,
        size,
        isCritical,
      );
      if (result === Gnutls.E_REQUESTED_DATA_NOT_AVAILABLE) break;
      if (result < 0) return result;
      if (isCritical[0]) critical = true;
      oids.push(new TextDecoder().decode(buffer.subarray(0, buffer.indexOf(0))));
    }
    return { oids, critical };
  }

  /** Free the GnuTLS object. */
  free(): void {
    gnutls().gnutls_x509_crt_deinit(this.handle);
  }
}

/** A gnutls_datum_t over PEM text up to its first NUL (QEMU passes strlen of the file). */
function pemDatum(pem: Uint8Array<ArrayBuffer>): Uint8Array<ArrayBuffer> {
  const end = pem.indexOf(0);
  return datum(end < 0 ? pem : pem.subarray(0, end));
}

/** The DER certificates a peer sent, as gnutls_datum_t pointers (empty when it sent none). */
export function peerCertificateData(session: Deno.PointerValue): Deno.PointerValue[] {
  const count = new Uint32Array(1);
  const list = gnutls().gnutls_certificate_get_peers(session, count);
  if (list === null) return [];
  return Array.from(
    { length: count[0] },
    (_, index) => Deno.UnsafePointer.offset(list, index * DATUM_SIZE),
  );
}

/** The PSK username a server session's client used, or null. */
export function pskUsername(session: Deno.PointerValue): string | null {
  return readCString(gnutls().gnutls_psk_server_get_username(session));
}
