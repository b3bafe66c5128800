/**
 * QEMU's sanity check of X.509 credentials at load (the `sanity-check`
 * property, on by default): the own certificate and every CA certificate
 * must be within their validity dates, the CA certificates must carry the CA
 * basic constraint and may sign certificates, the own certificate must not be
 * a CA, must permit signatures and allow use by this
 * side (when those extensions are critical), and must verify against the CA.
 * Messages are QEMU's.
 *
 * @module
 */

import { DenbdError } from "../errors.ts";
import {
  type BasicConstraint,
  MAX_CA_CERTIFICATES,
  verifyStatusReason,
  X509Certificate,
} from "./certificate.ts";
import { readFileAsGlib } from "./glib-file.ts";
import { errorText, Gnutls, gnutls, KeyPurpose } from "./gnutls.ts";

/** Which certificate is being checked, for the messages. */
interface Role {
  readonly server: boolean;
  readonly ca: boolean;
  readonly file: string;
}

/** The role's noun in QEMU's date messages. */
function roleNoun(role: Role): string {
  return role.ca ? "CA" : role.server ? "server" : "client";
}

/**
 * Check the own certificate `certFile` (when present) and the CA
 * certificates of `caFile` as QEMU does at load; throws a DenbdError.
 */
export async function checkX509Files(
  server: boolean,
  caFile: string,
  certFile: string | undefined,
): Promise<void> {
  const side = server ? "server" : "client";
  let own: X509Certificate | undefined;
  let cas: X509Certificate[] = [];
  try {
    if (certFile !== undefined) {
      const pem = await readFileAsGlib(certFile, `Cannot load CA cert list ${certFile}: `);
      const imported = X509Certificate.fromPem(pem);
      if (typeof imported === "number") {
        throw new DenbdError(
          "invalid",
          `Unable to import ${side} certificate ${certFile}: ${errorText(imported)}`,
        );
      }
      own = imported;
    }
    const caPem = await readFileAsGlib(caFile, `Cannot load CA cert list ${caFile}: `);
    const list = X509Certificate.listFromPem(caPem, MAX_CA_CERTIFICATES);
    if (list === null) {
      throw new DenbdError("invalid", `Unable to import CA certificate list ${caFile}`);
    }
    cas = list;
    if (own) checkCertificate(own, { server, ca: false, file: certFile! });
    for (const ca of cas) checkCertificate(ca, { server, ca: true, file: caFile });
    if (own && cas.length) checkPair(own, certFile!, cas, caFile, server);
  } finally {
    own?.free();
    for (const ca of cas) ca.free();
  }
}

/** QEMU's checks of one certificate: dates, basic constraints, key usage, key purpose. */
function checkCertificate(certificate: X509Certificate, role: Role): void {
  checkDates(certificate, role);
  checkBasicConstraint(certificate.basicConstraint(), role);
  checkKeyUsage(certificate, role);
  if (!role.ca) checkKeyPurpose(certificate, role);
}

function checkDates(certificate: X509Certificate, role: Role): void {
  const now = Date.now() / 1000;
  if (certificate.expiration < now) {
    throw new DenbdError(
      "invalid",
      `The ${roleNoun(role)} certificate ${role.file} has expired`,
    );
  }
  if (certificate.activation > now) {
    throw new DenbdError(
      "invalid",
      `The ${roleNoun(role)} certificate ${role.file} is not yet active`,
    );
  }
}

function checkBasicConstraint(constraint: BasicConstraint | number, role: Role): void {
  if (typeof constraint === "number") {
    throw new DenbdError(
      "invalid",
      `Unable to query certificate ${role.file} basic constraints: ${errorText(constraint)}`,
    );
  }
  if (constraint === "ca" && !role.ca) {
    throw new DenbdError(
      "invalid",
      `The certificate ${role.file} basic constraints show a CA, but we need one for a ${
        role.server ? "server" : "client"
      }`,
    );
  }
  if (constraint === "not-ca" && role.ca) {
    throw new DenbdError(
      "invalid",
      `The certificate ${role.file} basic constraints do not show a CA`,
    );
  }
  if (constraint === "missing" && role.ca) {
    throw new DenbdError(
      "invalid",
      `The certificate ${role.file} is missing basic constraints for a CA`,
    );
  }
}

/**
 * Key usage bits each role needs, with what QEMU says when a critical usage
 * lacks one. QEMU 7.2 (Debian 12) does not ask for key encipherment, which
 * ECDSA certificates do not carry; later QEMU versions do.
 */
const NEEDED_USAGE: readonly {
  readonly ca: boolean;
  readonly bit: number;
  readonly lacks: string;
}[] = [
  { ca: true, bit: Gnutls.KEY_KEY_CERT_SIGN, lacks: "certificate signing" },
  { ca: false, bit: Gnutls.KEY_DIGITAL_SIGNATURE, lacks: "digital signature" },
];

function checkKeyUsage(certificate: X509Certificate, role: Role): void {
  const usage = certificate.keyUsage();
  if (typeof usage === "number") {
    throw new DenbdError(
      "invalid",
      `Unable to query certificate ${role.file} key usage: ${errorText(usage)}`,
    );
  }
  // An absent extension counts as permitting what the role needs.
  if (usage === null || !usage.critical) return;
  for (const need of NEEDED_USAGE) {
    if (need.ca === role.ca && !(usage.usage & need.bit)) {
      throw new DenbdError(
        "invalid",
        `Certificate ${role.file} usage does not permit ${need.lacks}`,
      );
    }
  }
}

function checkKeyPurpose(certificate: X509Certificate, role: Role): void {
  const purposes = certificate.keyPurposes();
  if (typeof purposes === "number") {
    throw new DenbdError(
      "invalid",
      `Unable to query certificate ${role.file} key purpose: ${errorText(purposes)}`,
    );
  }
  if (!purposes.oids.length || !purposes.critical) return;
  const wanted = role.server ? KeyPurpose.TLS_WWW_SERVER : KeyPurpose.TLS_WWW_CLIENT;
  if (purposes.oids.some((oid) => oid === wanted || oid === KeyPurpose.ANY)) return;
  throw new DenbdError(
    "invalid",
    `Certificate ${role.file} purpose does not allow use with a TLS ${
      role.server ? "server" : "client"
    }`,
  );
}

/** The own certificate must verify against the CA list. */
function checkPair(
  own: X509Certificate,
  certFile: string,
  cas: readonly X509Certificate[],
  caFile: string,
  server: boolean,
): void {
  const ownList = new BigUint64Array([BigInt(Deno.UnsafePointer.value(own.handle))]);
  const caList = new BigUint64Array(
    cas.map((ca) => BigInt(Deno.UnsafePointer.value(ca.handle))),
  );
  const status = new Uint32Array(1);
  const result = gnutls().gnutls_x509_crt_list_verify(
    ownList,
    1,
    caList,
    cas.length,
    null,
    0,
    0,
    status,
  );
  if (result < 0) {
    throw new DenbdError(
      "invalid",
      `Unable to verify ${
        server ? "server" : "client"
      } certificate ${certFile} against CA certificate ${caFile}`,
    );
  }
  if (status[0] !== 0) {
    throw new DenbdError(
      "invalid",
      `Our own certificate ${certFile} failed validation against ${caFile}: ${
        verifyStatusReason(status[0])
      }`,
    );
  }
}
