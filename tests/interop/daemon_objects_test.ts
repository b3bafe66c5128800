/**
 * object-add and object-del of every object type denbd creates (secrets,
 * TLS credentials of the three kinds, authorization objects), with good and
 * bad properties, sent to qemu-storage-daemon 7.2 and `denbd daemon` alike:
 * the answers must be the same. The credential directories come from the
 * shared TLS fixtures (certtool-made), copied into each daemon's directory
 * with variants: missing files, an expired or foreign certificate, an
 * encrypted key, good and bad DH parameters.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { needs, run, withTempDir } from "./harness.ts";
import {
  type Json,
  KINDS,
  makePlace,
  normaliseText,
  qmp,
  runDaemon,
  type StepLike,
  withDaemonPair,
} from "./daemon_harness.ts";
import { tlsFixtures } from "./tls_fixtures.ts";

/** The password of the encrypted key (not ASCII: it must reach GnuTLS as UTF-8). */
const KEY_PASSWORD = "pässw0rd";

/** Copy the files `names` of directory `from` into `to` (made if needed). */
async function copyFiles(from: string, to: string, names: readonly string[]): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for (const name of names) await Deno.copyFile(join(from, name), join(to, name));
}

/** Run certtool, failing with its output if it fails. */
async function certtool(args: string[]): Promise<void> {
  const result = await run("certtool", args);
  assert.equal(result.code, 0, `certtool ${args.join(" ")}: ${result.stderr}`);
}

const SERVER_FILES = ["ca-cert.pem", "server-cert.pem", "server-key.pem"];
const CLIENT_FILES = ["ca-cert.pem", "client-cert.pem", "client-key.pem"];
const GARBAGE = "-----BEGIN GARBAGE-----\nnot base64 at all\n-----END GARBAGE-----\n";

/** Each daemon's credential directories, secret files and list file. */
async function credentials(dir: string): Promise<void> {
  const fixtures = await tlsFixtures();
  const at = (name: string) => join(dir, name);
  await copyFiles(fixtures.server, at("server"), SERVER_FILES);
  await copyFiles(fixtures.client, at("client"), CLIENT_FILES);
  await copyFiles(fixtures.client, at("ca-only"), ["ca-cert.pem"]);
  await copyFiles(fixtures.server, at("no-key"), ["ca-cert.pem", "server-cert.pem"]);
  await copyFiles(fixtures.server, at("no-cert"), ["ca-cert.pem", "server-key.pem"]);
  await copyFiles(fixtures.expiredServer, at("expired"), SERVER_FILES);
  await copyFiles(fixtures.expiredClient, at("expired-client"), CLIENT_FILES);
  // A server certificate from the foreign CA beside the real CA's certificate.
  await copyFiles(fixtures.server, at("mixed"), ["ca-cert.pem"]);
  await copyFiles(fixtures.foreignServer, at("mixed"), ["server-cert.pem", "server-key.pem"]);
  await copyFiles(fixtures.server, at("bad-ca"), ["server-cert.pem", "server-key.pem"]);
  await Deno.writeTextFile(join(at("bad-ca"), "ca-cert.pem"), GARBAGE);
  await copyFiles(fixtures.server, at("bad-key"), ["ca-cert.pem", "server-cert.pem"]);
  await Deno.writeTextFile(join(at("bad-key"), "server-key.pem"), GARBAGE);
  // The server key encrypted (PKCS #8) with KEY_PASSWORD.
  await copyFiles(fixtures.server, at("encrypted"), ["ca-cert.pem", "server-cert.pem"]);
  await certtool([
    "--to-p8",
    "--load-privkey",
    join(fixtures.server, "server-key.pem"),
    "--password",
    KEY_PASSWORD,
    "--outfile",
    join(at("encrypted"), "server-key.pem"),
  ]);
  // DH parameters, good and bad, for each kind that takes them.
  await certtool(["--get-dh-params", "--sec-param", "medium", "--outfile", at("dh.pem")]);
  await copyFiles(fixtures.server, at("x509-dh"), SERVER_FILES);
  await copyFiles(fixtures.server, at("x509-bad-dh"), SERVER_FILES);
  await copyFiles(fixtures.psk, at("psk"), ["keys.psk"]);
  await copyFiles(fixtures.psk, at("psk-dh"), ["keys.psk"]);
  await copyFiles(fixtures.psk, at("psk-bad-dh"), ["keys.psk"]);
  await Deno.mkdir(at("anon-dh"));
  await Deno.mkdir(at("anon-bad-dh"));
  for (const name of ["x509-dh", "psk-dh", "anon-dh"]) {
    await Deno.copyFile(at("dh.pem"), join(at(name), "dh-params.pem"));
  }
  for (const name of ["x509-bad-dh", "psk-bad-dh", "anon-bad-dh"]) {
    await Deno.writeTextFile(join(at(name), "dh-params.pem"), GARBAGE);
  }
  // Secrets in files.
  await Deno.writeTextFile(at("password.txt"), KEY_PASSWORD);
  await Deno.writeTextFile(
    at("password.b64"),
    btoa(String.fromCharCode(
      ...new TextEncoder().encode(KEY_PASSWORD),
    )) + "\n",
  );
  await Deno.writeFile(at("nul.b64"), new Uint8Array([0x61, 0x47, 0, 0x56]));
  await Deno.writeTextFile(at("list.json"), '{"policy": "allow"}');
}

/** Ids for objects expected to fail, each its own so that one created by mistake shows. */
let failing = 0;

/** object-add of `type`; the id "x" stands for a new id of a failing case. */
const add = (type: string, id: string, properties: Json = {}) =>
  qmp("object-add", { "qom-type": type, id: id === "x" ? `x${++failing}` : id, ...properties });
const del = (id: string) => qmp("object-del", { id });
const x509 = (id: string, properties: Json) => add("tls-creds-x509", id, properties);

const SECRETS: StepLike[] = [
  add("secret", "pw", { data: KEY_PASSWORD }),
  add("secret", "pw-file", { file: "$DIR/password.txt" }),
  add("secret", "pw-b64", { file: "$DIR/password.b64", format: "base64" }),
  add("secret", "wrong", { data: "not the password" }),
  add("secret", "binary", { data: "/w==", format: "base64" }),
  add("secret", "short", { data: "aGVsbG8", format: "base64" }),
  add("secret", "x", { data: "a b", format: "base64" }),
  add("secret", "x", { file: "$DIR/nul.b64", format: "base64" }),
  add("secret", "x", { file: "$DIR/none.txt" }),
  add("secret", "x", { file: "$DIR" }),
  add("secret", "x", { data: "a", file: "$DIR/password.txt" }),
  add("secret", "x", {}),
  add("secret", "x", { data: "a", format: "hex" }),
  add("iothread", "io0"),
];

const X509: StepLike[] = [
  x509("x-server", { dir: "$DIR/server", endpoint: "server" }),
  x509("x-server-noverify", { dir: "$DIR/server", endpoint: "server", "verify-peer": false }),
  x509("x-server-priority", { dir: "$DIR/server", endpoint: "server", priority: "BOGUS" }),
  x509("x-client", { dir: "$DIR/client", endpoint: "client" }),
  x509("x-default-endpoint", { dir: "$DIR/client" }),
  x509("x-ca-only", { dir: "$DIR/ca-only", endpoint: "client" }),
  // A client without a certificate and key never looks its passwordid up.
  x509("x-ca-only-pw", { dir: "$DIR/ca-only", endpoint: "client", passwordid: "nope" }),
  x509("x", { endpoint: "server" }),
  x509("x", { endpoint: "client" }),
  x509("x", { dir: "$DIR/none", endpoint: "server" }),
  x509("x", { dir: "$DIR/ca-only", endpoint: "server" }),
  x509("x", { dir: "$DIR/no-key", endpoint: "server" }),
  x509("x", { dir: "$DIR/no-cert", endpoint: "server" }),
  x509("x", { dir: "$DIR/expired", endpoint: "server" }),
  x509("x-expired-unchecked", { dir: "$DIR/expired", endpoint: "server", "sanity-check": false }),
  x509("x", { dir: "$DIR/expired-client", endpoint: "client" }),
  x509("x", { dir: "$DIR/mixed", endpoint: "server" }),
  x509("x", { dir: "$DIR/bad-ca", endpoint: "server" }),
  // Unchecked, a CA file without a certificate loads (GnuTLS finds none in it and says nothing).
  x509("x-bad-ca-unchecked", { dir: "$DIR/bad-ca", endpoint: "server", "sanity-check": false }),
  x509("x", { dir: "$DIR/bad-key", endpoint: "server" }),
  x509("x", { dir: "$DIR/server", endpoint: "server", loaded: true }),
  x509("x", { dir: "$DIR/server", endpoint: "middle" }),
  // The encrypted key and its password.
  x509("x-encrypted", { dir: "$DIR/encrypted", endpoint: "server", passwordid: "pw" }),
  x509("x-encrypted-file", { dir: "$DIR/encrypted", endpoint: "server", passwordid: "pw-file" }),
  x509("x-encrypted-b64", { dir: "$DIR/encrypted", endpoint: "server", passwordid: "pw-b64" }),
  x509("x", { dir: "$DIR/encrypted", endpoint: "server" }),
  x509("x", { dir: "$DIR/encrypted", endpoint: "server", passwordid: "wrong" }),
  x509("x", { dir: "$DIR/encrypted", endpoint: "server", passwordid: "nope" }),
  x509("x", { dir: "$DIR/encrypted", endpoint: "server", passwordid: "io0" }),
  x509("x", { dir: "$DIR/encrypted", endpoint: "server", passwordid: "binary" }),
  x509("x-plain-key-pw", { dir: "$DIR/server", endpoint: "server", passwordid: "pw" }),
  // DH parameters (a server's only).
  x509("x-dh", { dir: "$DIR/x509-dh", endpoint: "server" }),
  x509("x", { dir: "$DIR/x509-bad-dh", endpoint: "server" }),
  x509("x-client-bad-dh", { dir: "$DIR/x509-bad-dh", endpoint: "client" }),
];

const PSK_AND_ANON: StepLike[] = [
  add("tls-creds-psk", "p-server", { dir: "$DIR/psk", endpoint: "server" }),
  add("tls-creds-psk", "p-client", { dir: "$DIR/psk", endpoint: "client" }),
  add("tls-creds-psk", "p-dh", { dir: "$DIR/psk-dh", endpoint: "server" }),
  add("tls-creds-psk", "x", { dir: "$DIR/psk-bad-dh", endpoint: "server" }),
  add("tls-creds-psk", "p-client-bad-dh", { dir: "$DIR/psk-bad-dh", endpoint: "client" }),
  add("tls-creds-psk", "x", { endpoint: "server" }),
  add("tls-creds-psk", "x", { endpoint: "server", username: "qemu" }),
  add("tls-creds-anon", "a-server", { endpoint: "server" }),
  add("tls-creds-anon", "a-client", {}),
  add("tls-creds-anon", "a-dh", { dir: "$DIR/anon-dh", endpoint: "server" }),
  add("tls-creds-anon", "a-none", { dir: "$DIR/none", endpoint: "server" }),
  add("tls-creds-anon", "x", { dir: "$DIR/anon-bad-dh", endpoint: "server" }),
  add("tls-creds-anon", "a-client-bad-dh", { dir: "$DIR/anon-bad-dh", endpoint: "client" }),
];

const AUTHZ: StepLike[] = [
  add("authz-simple", "z-simple", { identity: "C=GB,O=denbd test,CN=alice" }),
  add("authz-simple", "x", {}),
  add("authz-list", "z-list", {
    policy: "deny",
    rules: [{ match: "C=GB,O=denbd test,CN=*", policy: "allow", format: "glob" }],
  }),
  add("authz-list", "x", { rules: [{ match: "x", policy: "allow", format: "regex" }] }),
  add("authz-list", "x", { rules: [{ policy: "allow" }] }),
  add("authz-list", "x", { policy: "maybe" }),
  add("authz-listfile", "x", { filename: "$DIR/list.json" }),
];

Deno.test(
  "object-add of secrets, TLS credentials and authz objects answers as qsd's does",
  needs("qemu-storage-daemon", "certtool"),
  async () => {
    await withDaemonPair({ args: [], setup: credentials }, async (pair) => {
      await pair.expectSame([...SECRETS, ...X509, ...PSK_AND_ANON, ...AUTHZ]);
      // What failed left nothing behind (object-del finds none of them), on both alike.
      const leftovers = Array.from({ length: failing }, (_, index) => del(`x${index + 1}`));
      await pair.expectSame(leftovers);
    });
  },
);

Deno.test(
  "object-del releases objects; their ids can be used again",
  needs("qemu-storage-daemon", "certtool"),
  async () => {
    const created: [StepLike, string][] = [
      [add("secret", "pw", { data: KEY_PASSWORD }), "pw"],
      [x509("x0", { dir: "$DIR/encrypted", endpoint: "server", passwordid: "pw" }), "x0"],
      [add("tls-creds-psk", "p0", { dir: "$DIR/psk", endpoint: "server" }), "p0"],
      [add("tls-creds-anon", "a0", { endpoint: "server" }), "a0"],
      [add("authz-simple", "z0", { identity: "C=GB" }), "z0"],
      [add("authz-list", "z1", { policy: "allow" }), "z1"],
    ];
    await withDaemonPair({ args: [], setup: credentials }, async (pair) => {
      await pair.expectSame([
        ...created.map(([step]) => step),
        ...created.map(([step]) => step),
        // A secret may go while credentials loaded with it stay.
        del("pw"),
        x509("x1", { dir: "$DIR/encrypted", endpoint: "server", passwordid: "pw" }),
        ...created.slice(1).map(([, id]) => del(id)),
        ...created.slice(1).map(([, id]) => del(id)),
        ...created.map(([step]) => step),
      ]);
    });
  },
);

Deno.test(
  "authz-list-file: denbd creates it; qsd 7.2 refuses both of its spellings",
  needs("qemu-storage-daemon", "certtool"),
  async () => {
    await withDaemonPair({ args: [], setup: credentials }, async (pair) => {
      const file = add("authz-list-file", "f0", { filename: "$DIR/list.json" });
      assert.deepEqual(await pair.only("qsd", file), [{
        error: {
          class: "GenericError",
          desc: "Parameter 'qom-type' does not accept value 'authz-list-file'",
        },
      }]);
      assert.deepEqual(await pair.only("denbd", file), [{ return: {} }]);
      const steps: [Json, unknown][] = [
        [add("authz-list-file", "f0", { filename: "$DIR/list.json" }), {
          error: {
            class: "GenericError",
            desc: "attempt to add duplicate property 'f0' to object (type 'container')",
          },
        }],
        [add("authz-list-file", "f1", { filename: "$DIR/list.json", refresh: false }), {
          return: {},
        }],
        [add("authz-list-file", "f2", {}), {
          error: { class: "GenericError", desc: "Parameter 'filename' is missing" },
        }],
        [add("authz-list-file", "f2", { filename: "$DIR/none.json" }), {
          error: {
            class: "GenericError",
            desc:
              "Unable to read '$DIR/none.json': Failed to open file \u201c$DIR/none.json\u201d: " +
              "No such file or directory",
          },
        }],
        [add("authz-list-file", "f2", { filename: "$DIR/password.txt" }), {
          error: { class: "GenericError", desc: /^JSON parse error in '\$DIR\/password.txt'/ },
        }],
        [del("f0"), { return: {} }],
        [del("f1"), { return: {} }],
      ];
      for (const [command, expected] of steps) {
        const [reply] = await pair.only("denbd", command);
        if (
          typeof expected === "object" && expected !== null && "error" in expected &&
          (expected.error as Json).desc instanceof RegExp
        ) {
          const desc = ((reply as Json).error as Json | undefined)?.desc;
          assert.match(String(desc), (expected.error as Json).desc as RegExp);
        } else {
          assert.deepEqual(reply, expected, JSON.stringify(command));
        }
      }
    });
  },
);

/** `--object` arguments qsd stops at, with the message and exit code to compare. */
const FAILING_OBJECT_ARGS: readonly string[][] = [
  ["--object", "secret,id=s0,data=a b,format=base64"],
  ["--object", "secret,id=s0,file=$DIR/none.txt"],
  ["--object", "tls-creds-x509,id=t0,dir=$DIR/expired,endpoint=server"],
  ["--object", "tls-creds-x509,id=t0,dir=$DIR/encrypted,endpoint=server,passwordid=nope"],
  [
    "--object",
    "secret,id=s0,data=not the password",
    "--object",
    "tls-creds-x509,id=t0,dir=$DIR/encrypted,endpoint=server,passwordid=s0",
  ],
  ["--object", "tls-creds-psk,id=t0,dir=$DIR/psk,endpoint=client,username=nobody"],
  ["--object", "tls-creds-anon,id=t0,dir=$DIR/anon-bad-dh,endpoint=server"],
  ["--object", "authz-list,id=z0,policy=maybe"],
  ["--object", "authz-listfile,id=z0,filename=$DIR/list.json"],
  ["--object", "authz-simple,id=z0", "--object", "authz-simple,id=z0,identity=x"],
];

Deno.test(
  "--object: the daemon stops at a bad object as qsd does",
  needs("qemu-storage-daemon", "certtool"),
  () =>
    withTempDir(async (root) => {
      const places = await Promise.all(
        KINDS.map((kind) => makePlace(root, kind, { setup: credentials })),
      );
      for (const args of FAILING_OBJECT_ARGS) {
        const [qsd, denbd] = await Promise.all(places.map(async (place) => {
          const result = await runDaemon(place, args, 15_000);
          return { code: result.code, stderr: normaliseText(result.stderr, place) };
        }));
        assert.notEqual(qsd.code, 0, `qsd accepted ${JSON.stringify(args)}`);
        assert.deepEqual(denbd, qsd, JSON.stringify(args));
      }
    }),
);
