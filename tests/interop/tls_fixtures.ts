/**
 * TLS certificates, keys and PSK files for the tests, made once per test
 * process with certtool (gnutls-bin) from templates, with ECDSA keys so the
 * whole set takes well under a second. The directories follow QEMU's layout
 * (docs/system/tls.rst): `ca-cert.pem`, `server-cert.pem` + `server-key.pem`
 * for a server, `client-cert.pem` + `client-key.pem` for a client, `keys.psk`
 * for PSK. Everything lives in one temporary directory removed at exit.
 *
 * The distinguished names are read back with `certtool -i` and put in the
 * order QEMU prints them (the string its authz matches).
 *
 * @module
 */

import { join } from "node:path";

/** Certificates and keys of this test process; every field a path unless said otherwise. */
export interface TlsFixtures {
  /** The temporary directory holding everything below. */
  readonly root: string;
  /** x509 server dir: ca-cert.pem, server-cert.pem, server-key.pem; cert names 127.0.0.1, ::1, localhost. */
  readonly server: string;
  /** x509 client dir: ca-cert.pem (the same CA), client-cert.pem, client-key.pem. */
  readonly client: string;
  /** The client certificate's DN exactly as QEMU prints it ("C=GB,O=denbd test,CN=alice"). */
  readonly clientDn: string;
  /** A second client (another DN, same CA) for authz deny cases. */
  readonly otherClient: string;
  /** The second client certificate's DN as QEMU prints it. */
  readonly otherClientDn: string;
  /** Client dir whose client cert comes from a foreign CA (its ca-cert.pem is the real CA). */
  readonly foreignClient: string;
  /** Server dir whose server cert comes from the foreign CA (ca-cert.pem: the foreign CA). */
  readonly foreignServer: string;
  /** Server dir with an expired server cert (same real CA). */
  readonly expiredServer: string;
  /** Client dir with an expired client cert (same real CA). */
  readonly expiredClient: string;
  /** Server dir whose cert names only "other.invalid" (same real CA). */
  readonly wrongHostServer: string;
  /** PSK dir holding keys.psk with lines for `pskUser` and "qemu". */
  readonly psk: string;
  /** The `keys.psk` file in `psk`. */
  readonly pskFile: string;
  /** The PSK username with a key in `pskFile`. */
  readonly pskUser: string;
  /** A keys file with a different key for `pskUser` (wrong key case). */
  readonly wrongPskFile: string;
  /** Client dir (same real CA, CN=carol) whose certificate the CRL revokes. */
  readonly revokedClient: string;
  /** Server dir (same real CA, names as `server`) whose certificate the CRL revokes. */
  readonly revokedServer: string;
  /** `server` plus ca-crl.pem: the CRL revoking `revokedClient` and `revokedServer`. */
  readonly crlServer: string;
  /** `client` plus the same ca-crl.pem. */
  readonly crlClient: string;
  /** Server dir like `server` whose server-key.pem is encrypted with `keyPassword`. */
  readonly encryptedKeyServer: string;
  /** The password of `encryptedKeyServer`'s key. */
  readonly keyPassword: string;
  /** DH parameters (PKCS#3 PEM, the RFC 7919 2048-bit group) for dh-params.pem cases. */
  readonly dhParamsFile: string;
}

/** Subject fields shared by every certificate (QEMU's docs use the same kind). */
const ORGANIZATION = "denbd test";
const COUNTRY = "GB";

/** Validity in the past, for the expired certificates (activation, expiration). */
const EXPIRED_VALIDITY = [
  'activation_date = "2020-01-01 00:00:00"',
  'expiration_date = "2021-01-01 00:00:00"',
];
/** Validity for every other certificate: active since 2020, good for ten years from now. */
const GOOD_VALIDITY = ['activation_date = "2020-01-01 00:00:00"', "expiration_days = 3650"];

/** A CA certificate's template. */
function caTemplate(cn: string): string[] {
  return [
    `cn = "${cn}"`,
    `organization = "${ORGANIZATION}"`,
    "ca",
    "cert_signing_key",
    ...GOOD_VALIDITY,
  ];
}

/** A server certificate's template naming `dnsNames` and `ipAddresses`. */
function serverTemplate(
  dnsNames: readonly string[],
  ipAddresses: readonly string[],
  validity: readonly string[],
): string[] {
  return [
    `cn = "${dnsNames[0]}"`,
    `organization = "${ORGANIZATION}"`,
    `country = ${COUNTRY}`,
    ...dnsNames.map((name) => `dns_name = "${name}"`),
    ...ipAddresses.map((address) => `ip_address = "${address}"`),
    "tls_www_server",
    "encryption_key",
    "signing_key",
    ...validity,
  ];
}

/** A client certificate's template for common name `cn`. */
function clientTemplate(cn: string, validity: readonly string[]): string[] {
  return [
    `cn = "${cn}"`,
    `organization = "${ORGANIZATION}"`,
    `country = ${COUNTRY}`,
    "tls_www_client",
    "encryption_key",
    "signing_key",
    ...validity,
  ];
}

/** Run certtool with `args`; throws with its output when it fails. */
async function certtool(args: readonly string[]): Promise<string> {
  const output = await new Deno.Command("certtool", {
    args: [...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000),
  }).output();
  const decoder = new TextDecoder();
  if (!output.success) {
    throw new Error(
      `certtool ${args.join(" ")} failed: ${decoder.decode(output.stderr)}` +
        decoder.decode(output.stdout),
    );
  }
  return decoder.decode(output.stdout);
}

/** A key and certificate on disk. */
interface Issued {
  readonly key: string;
  readonly cert: string;
}

/** Make an ECDSA key `base-key.pem` and a certificate `base-cert.pem` in `dir`, signed by `ca` (or self-signed). */
async function issue(
  dir: string,
  base: string,
  template: readonly string[],
  ca?: Issued,
  password?: string,
): Promise<Issued> {
  const key = join(dir, `${base}-key.pem`);
  const cert = join(dir, `${base}-cert.pem`);
  const templateFile = join(dir, `${base}.info`);
  const passwordArgs = password === undefined ? [] : ["--password", password];
  await Deno.writeTextFile(templateFile, template.join("\n") + "\n");
  await certtool(["--generate-privkey", "--key-type=ecdsa", ...passwordArgs, "--outfile", key]);
  await certtool([
    ca ? "--generate-certificate" : "--generate-self-signed",
    ...passwordArgs,
    "--load-privkey",
    key,
    ...(ca ? ["--load-ca-certificate", ca.cert, "--load-ca-privkey", ca.key] : []),
    "--template",
    templateFile,
    "--outfile",
    cert,
  ]);
  await Deno.remove(templateFile);
  return { key, cert };
}

/**
 * The subject DN of certificate `cert` as QEMU prints and matches it. QEMU
 * takes gnutls_x509_crt_get_dn, which lists the RDNs in certificate order
 * ("C=GB,O=denbd test,CN=alice"; checked against qemu-nbd's authz-simple);
 * `certtool -i` prints RFC 4514 order (the reverse), so its RDNs are reversed
 * here (the fixtures' DNs have no multi-valued RDNs or escaped commas).
 */
async function subjectDn(cert: string): Promise<string> {
  const info = await certtool(["-i", "--infile", cert]);
  const match = /^\s*Subject: (.*)$/m.exec(info);
  if (!match) throw new Error(`certtool -i ${cert}: no Subject line`);
  return match[1].split(",").reverse().join(",");
}

/** A CRL signed by `ca` listing the certificates `revoked`, written to `crl`. */
async function revoke(
  dir: string,
  ca: Issued,
  revoked: readonly Issued[],
  crl: string,
): Promise<void> {
  const templateFile = join(dir, "crl.info");
  const revokedFile = join(dir, "revoked-certs.pem");
  await Deno.writeTextFile(templateFile, "crl_next_update = 3650\ncrl_number = 1\n");
  const certs = await Promise.all(revoked.map((issued) => Deno.readTextFile(issued.cert)));
  await Deno.writeTextFile(revokedFile, certs.join(""));
  await certtool([
    "--generate-crl",
    "--load-ca-privkey",
    ca.key,
    "--load-ca-certificate",
    ca.cert,
    "--load-certificate",
    revokedFile,
    "--template",
    templateFile,
    "--outfile",
    crl,
  ]);
  await Promise.all([Deno.remove(templateFile), Deno.remove(revokedFile)]);
}

/** Make directory `dir` holding `ca` as ca-cert.pem and `leaf` as `<role>-cert.pem` + `<role>-key.pem`. */
async function credentialsDir(
  dir: string,
  ca: Issued,
  role: "server" | "client",
  leaf: Issued,
): Promise<string> {
  await Deno.mkdir(dir);
  await Promise.all([
    Deno.copyFile(ca.cert, join(dir, "ca-cert.pem")),
    Deno.copyFile(leaf.cert, join(dir, `${role}-cert.pem`)),
    Deno.copyFile(leaf.key, join(dir, `${role}-key.pem`)),
  ]);
  return dir;
}

/** A `keys.psk` line: `user:hexkey` with a fresh random 32-byte key. */
function pskLine(user: string): string {
  const key = crypto.getRandomValues(new Uint8Array(32));
  return `${user}:${Array.from(key, (byte) => byte.toString(16).padStart(2, "0")).join("")}`;
}

/** Make every fixture under a new temporary directory. */
async function makeFixtures(): Promise<TlsFixtures> {
  const root = await Deno.makeTempDir({ prefix: "denbd-tls-" });
  const remove = () => {
    try {
      Deno.removeSync(root, { recursive: true });
    } catch {
      // Already gone.
    }
  };
  // At exit, and when an uncaught error is about to end the process (no unload then).
  for (const event of ["unload", "error", "unhandledrejection"]) {
    globalThis.addEventListener(event, remove);
  }
  const issued = join(root, "issued");
  await Deno.mkdir(issued);
  const [ca, foreignCa] = await Promise.all([
    issue(issued, "ca", caTemplate("denbd test CA")),
    issue(issued, "foreign-ca", caTemplate("denbd foreign CA")),
  ]);
  const serverNames = ["localhost"];
  const serverAddresses = ["127.0.0.1", "::1"];
  const keyPassword = "denbd key password";
  const [
    server,
    client,
    otherClient,
    foreignClient,
    foreignServer,
    expiredServer,
    expiredClient,
    wrongHost,
    revokedClient,
    revokedServer,
    encryptedKeyServer,
  ] = await Promise.all([
    issue(issued, "server", serverTemplate(serverNames, serverAddresses, GOOD_VALIDITY), ca),
    issue(issued, "client", clientTemplate("alice", GOOD_VALIDITY), ca),
    issue(issued, "other-client", clientTemplate("mallory", GOOD_VALIDITY), ca),
    issue(issued, "foreign-client", clientTemplate("alice", GOOD_VALIDITY), foreignCa),
    issue(
      issued,
      "foreign-server",
      serverTemplate(serverNames, serverAddresses, GOOD_VALIDITY),
      foreignCa,
    ),
    issue(
      issued,
      "expired-server",
      serverTemplate(serverNames, serverAddresses, EXPIRED_VALIDITY),
      ca,
    ),
    issue(issued, "expired-client", clientTemplate("alice", EXPIRED_VALIDITY), ca),
    issue(issued, "wrong-host-server", serverTemplate(["other.invalid"], [], GOOD_VALIDITY), ca),
    issue(issued, "revoked-client", clientTemplate("carol", GOOD_VALIDITY), ca),
    issue(
      issued,
      "revoked-server",
      serverTemplate(serverNames, serverAddresses, GOOD_VALIDITY),
      ca,
    ),
    issue(
      issued,
      "encrypted-key-server",
      serverTemplate(serverNames, serverAddresses, GOOD_VALIDITY),
      ca,
      keyPassword,
    ),
  ]);
  const crlServer = await credentialsDir(join(root, "crl-server"), ca, "server", server);
  const crlClient = await credentialsDir(join(root, "crl-client"), ca, "client", client);
  await revoke(issued, ca, [revokedClient, revokedServer], join(crlServer, "ca-crl.pem"));
  await Deno.copyFile(join(crlServer, "ca-crl.pem"), join(crlClient, "ca-crl.pem"));
  const dhParamsFile = join(root, "dh-params.pem");
  await certtool(["--get-dh-params", "--bits", "2048", "--outfile", dhParamsFile]);
  const psk = join(root, "psk");
  await Deno.mkdir(psk);
  const pskUser = "alice";
  const pskFile = join(psk, "keys.psk");
  const wrongPskFile = join(root, "wrong-keys.psk");
  await Deno.writeTextFile(pskFile, `${pskLine(pskUser)}\n${pskLine("qemu")}\n`);
  await Deno.writeTextFile(wrongPskFile, `${pskLine(pskUser)}\n`);
  const [clientDn, otherClientDn] = await Promise.all([
    subjectDn(client.cert),
    subjectDn(otherClient.cert),
  ]);
  return {
    root,
    server: await credentialsDir(join(root, "server"), ca, "server", server),
    client: await credentialsDir(join(root, "client"), ca, "client", client),
    clientDn,
    otherClient: await credentialsDir(join(root, "other-client"), ca, "client", otherClient),
    otherClientDn,
    foreignClient: await credentialsDir(join(root, "foreign-client"), ca, "client", foreignClient),
    foreignServer: await credentialsDir(
      join(root, "foreign-server"),
      foreignCa,
      "server",
      foreignServer,
    ),
    expiredServer: await credentialsDir(join(root, "expired-server"), ca, "server", expiredServer),
    expiredClient: await credentialsDir(join(root, "expired-client"), ca, "client", expiredClient),
    wrongHostServer: await credentialsDir(join(root, "wrong-host-server"), ca, "server", wrongHost),
    psk,
    pskFile,
    pskUser,
    wrongPskFile,
    revokedClient: await credentialsDir(join(root, "revoked-client"), ca, "client", revokedClient),
    revokedServer: await credentialsDir(join(root, "revoked-server"), ca, "server", revokedServer),
    crlServer,
    crlClient,
    encryptedKeyServer: await credentialsDir(
      join(root, "encrypted-key-server"),
      ca,
      "server",
      encryptedKeyServer,
    ),
    keyPassword,
    dhParamsFile,
  };
}

/** The fixtures of this process, once made. */
let fixtures: Promise<TlsFixtures> | undefined;

/** The fixtures of this test process (made on first call). */
export function tlsFixtures(): Promise<TlsFixtures> {
  fixtures ??= makeFixtures();
  return fixtures;
}
