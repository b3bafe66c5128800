/**
 * denbd as a TLS server, `serve` and `daemon` alike, against the real TLS
 * clients: nbdinfo, nbdcopy, qemu-img, qemu-io and python libnbd. X.509 with
 * verify-peer (good, foreign-CA, expired and missing client certificates),
 * authorization by distinguished name (authz-simple, authz-list globs), PSK
 * (right key, wrong key, unknown user), plain clients refused (LIST
 * included), plaintext injected behind STARTTLS never answered, and a client
 * stalling inside the TLS handshake dropped at the handshake limit.
 *
 * With DENBD_SUBJECT=qemu the same bodies run against qemu-nbd and
 * qemu-storage-daemon 7.2 (the handshake-limit test excepted: 7.2 has no
 * limit to set).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type CommandResult,
  freePort,
  launch,
  makeSparseImage,
  needs,
  python,
  run,
  type ServerProcess,
  sha256File,
  SUBJECT_IS_QEMU,
  subjectDaemonCommand,
  subjectServeCommand,
  withStarted,
  withTempDir,
} from "./harness.ts";
import { type TlsFixtures, tlsFixtures } from "./tls_fixtures.ts";
import { NODES, qmp, type RunningDaemon, withDaemonPair } from "./daemon_harness.ts";
import { BufferedReader } from "../../src/io/buffered-reader.ts";
import { writeAll } from "../../src/io/byte-stream.ts";
import { NBD_CLIENT_FLAG, NBD_OPT, NBD_REP, NBD_SIZE } from "../../src/nbd/protocol.ts";
import {
  decodeOptionReplyHeader,
  encodeClientFlags,
  encodeOption,
  type OptionReplyHeader,
} from "../../src/nbd/wire.ts";
import { TlsCredentials } from "../../src/tls/credentials.ts";
import { TlsSession } from "../../src/tls/session.ts";

const MiB = 1 << 20;
const IMAGE_SIZE = 4 * MiB;
const KINDS = ["serve", "daemon"] as const;
type Kind = (typeof KINDS)[number];

/** How a TLS server under test is configured. */
interface TlsServerSpec {
  /** --object arguments; the credentials object must have id tls0. */
  readonly objects: readonly string[];
  /** The authorization object's id, if any. */
  readonly authz?: string;
  /** Seconds of handshake limit (denbd only: QEMU 7.2 has none to set). */
  readonly handshakeLimit?: number;
}

/** A running TLS server and where it serves export "disk". */
interface TlsServer {
  readonly process: ServerProcess;
  readonly port: number;
  /** nbds:// URI of the export, without query. */
  readonly uri: string;
}

/** Start `denbd serve` or `denbd daemon` (or QEMU's) requiring TLS with `spec`, serving `image`. */
async function startTlsServer(kind: Kind, image: string, spec: TlsServerSpec): Promise<TlsServer> {
  const port = freePort();
  const objects = spec.objects.flatMap((object) => ["--object", object]);
  let command: string;
  let args: string[];
  if (kind === "serve") {
    const [program, prefix] = subjectServeCommand();
    command = program;
    args = [
      ...prefix,
      ...objects,
      "--tls-creds",
      "tls0",
      ...(spec.authz ? ["--tls-authz", spec.authz] : []),
      ...(spec.handshakeLimit ? ["--handshake-limit", String(spec.handshakeLimit)] : []),
      "-t",
      "-b",
      "127.0.0.1",
      "-p",
      String(port),
      "-x",
      "disk",
      "-f",
      "raw",
      image,
    ];
  } else {
    const [program, prefix] = subjectDaemonCommand();
    command = program;
    const server = [
      `addr.type=inet,addr.host=127.0.0.1,addr.port=${port},tls-creds=tls0`,
      ...(spec.authz ? [`tls-authz=${spec.authz}`] : []),
      ...(spec.handshakeLimit ? [`handshake-max-seconds=${spec.handshakeLimit}`] : []),
    ];
    args = [
      ...prefix,
      ...objects,
      "--blockdev",
      `driver=file,node-name=f0,filename=${image.replaceAll(",", ",,")}`,
      "--nbd-server",
      server.join(","),
      "--export",
      "type=nbd,id=e0,node-name=f0,name=disk,writable=on",
    ];
  }
  const uri = `nbds://127.0.0.1:${port}/disk`;
  const process = await launch({ command, args, uri, listen: { hostname: "127.0.0.1", port } });
  return { process, port, uri };
}

/** Run `body` with a fresh image and a TLS server of `kind` over it; the server is always stopped. */
function withTlsServer(
  kind: Kind,
  spec: (fixtures: TlsFixtures) => TlsServerSpec,
  body: (server: TlsServer, fixtures: TlsFixtures, dir: string) => Promise<void>,
): Promise<void> {
  return withTempDir(async (dir) => {
    const fixtures = await tlsFixtures();
    const image = join(dir, "disk.img");
    await makeSparseImage(image, IMAGE_SIZE, [[0, 65536], [MiB, 4096]]);
    let server: TlsServer | undefined;
    await withStarted(
      async () => (server = await startTlsServer(kind, image, spec(fixtures))).process,
      () => body(server!, fixtures, dir),
    );
  });
}

/** x509 server credentials object over `dir`. */
function x509Object(dir: string, verifyPeer = true): string {
  return `tls-creds-x509,id=tls0,dir=${dir},endpoint=server,verify-peer=${
    verifyPeer ? "on" : "off"
  }`;
}

/** A keyval value with commas doubled, as QEMU's option syntax wants. */
const keyval = (text: string) => text.replaceAll(",", ",,");

/** The URI with a client certificate directory. */
const withCerts = (server: TlsServer, dir: string) => `${server.uri}?tls-certificates=${dir}`;

/** nbdinfo on `uri`. */
const nbdinfo = (...args: string[]): Promise<CommandResult> => run("nbdinfo", args);

/** Assert that nbdinfo connected over TLS. */
function assertTlsInfo(result: CommandResult, what: string): void {
  assert.equal(result.code, 0, `${what}: ${result.stderr}`);
  assert.match(result.stdout, /protocol: newstyle-fixed with TLS/, what);
}

/** Assert that a client was refused. */
function assertRefused(result: CommandResult, what: string): void {
  assert.notEqual(result.code, 0, `${what} was let in:\n${result.stdout}`);
}

/** Wait (bounded) until the server's log says `pattern`. */
async function logSays(server: TlsServer, pattern: RegExp): Promise<void> {
  for (let waited = 0; waited < 5_000 && !pattern.test(server.process.stderr()); waited += 50) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  assert.match(server.process.stderr(), pattern);
}

const LIBNBD_X509 = `
import nbd, sys
uri, certs, out = sys.argv[1:4]
h = nbd.NBD()
h.set_tls(nbd.TLS_REQUIRE)
h.set_tls_certificates(certs)
h.set_export_name("disk")
host, port = uri.split("//")[1].split("/")[0].split(":")
h.connect_tcp(host, port)
assert h.get_tls_negotiated()
h.pwrite(b"\\xa5" * 4096, 2 * 1024 * 1024)
data = h.pread(4096, 2 * 1024 * 1024)
h.flush()
open(out, "w").write("ok" if data == b"\\xa5" * 4096 else "bad")
h.shutdown()
`;

for (const kind of KINDS) {
  Deno.test(
    `${kind}: X.509 with verify-peer: nbdinfo, nbdcopy, qemu-img, qemu-io, libnbd and nbdkit over TLS`,
    needs(
      "nbdinfo",
      "nbdcopy",
      "qemu-img",
      "qemu-io",
      "qemu-nbd",
      "qemu-storage-daemon",
      "nbdkit",
    ),
    async () => {
      await withTlsServer(
        kind,
        (f) => ({ objects: [x509Object(f.server)] }),
        async (server, f, dir) => {
          assertTlsInfo(await nbdinfo(withCerts(server, f.client)), "nbdinfo");
          // nbdcopy writes a whole image through TLS and reads it back.
          const source = join(dir, "source.img");
          await makeSparseImage(source, IMAGE_SIZE, [[0, MiB], [3 * MiB, 65536]]);
          const copyIn = await run("nbdcopy", [source, withCerts(server, f.client)]);
          assert.equal(copyIn.code, 0, copyIn.stderr);
          const back = join(dir, "back.img");
          const copyOut = await run("nbdcopy", [withCerts(server, f.client), back]);
          assert.equal(copyOut.code, 0, copyOut.stderr);
          assert.equal(await sha256File(back), await sha256File(source));
          // QEMU's block layer as a TLS client.
          const clientObject = `tls-creds-x509,id=tls0,dir=${f.client},endpoint=client`;
          const nbdNode =
            `driver=nbd,host=127.0.0.1,port=${server.port},export=disk,tls-creds=tls0`;
          const info = await run("qemu-img", [
            "info",
            "--output=json",
            "--object",
            clientObject,
            "--image-opts",
            nbdNode,
          ]);
          assert.equal(info.code, 0, info.stderr);
          assert.equal(JSON.parse(info.stdout)["virtual-size"], IMAGE_SIZE);
          const io = await run("qemu-io", [
            "--object",
            clientObject,
            "--image-opts",
            nbdNode,
            "-c",
            "write -P 0x5a 1M 64k",
            "-c",
            "read -P 0x5a 1M 64k",
          ]);
          assert.equal(io.code, 0, io.stderr + io.stdout);
          assert.doesNotMatch(io.stdout, /Pattern verification failed/);
          // python libnbd.
          const out = join(dir, "libnbd.out");
          const result = await python(LIBNBD_X509, [server.uri, f.client, out]);
          assert.equal(result.code, 0, result.stderr);
          assert.equal(await Deno.readTextFile(out), "ok");
          // nbdkit's nbd plugin as the TLS client, serving nbdinfo on a private socket.
          const relay = await run("nbdkit", [
            "-U",
            "-",
            "nbd",
            "hostname=127.0.0.1",
            `port=${server.port}`,
            "export=disk",
            "tls=require",
            `tls-certificates=${f.client}`,
            "--run",
            'nbdinfo --size "$uri"',
          ]);
          assert.equal(relay.code, 0, relay.stderr);
          assert.equal(relay.stdout.trim(), String(IMAGE_SIZE));
        },
      );
    },
  );

  Deno.test(
    `${kind}: verify-peer refuses foreign-CA, expired and missing client certificates; plain clients are refused`,
    needs("nbdinfo", "qemu-nbd", "qemu-storage-daemon"),
    async () => {
      await withTlsServer(
        kind,
        (f) => ({ objects: [x509Object(f.server)] }),
        async (server, f, dir) => {
          const noCert = join(dir, "no-cert");
          await Deno.mkdir(noCert);
          await Deno.copyFile(join(f.client, "ca-cert.pem"), join(noCert, "ca-cert.pem"));
          for (
            const [what, certs] of [
              ["foreign-CA certificate", f.foreignClient],
              ["expired certificate", f.expiredClient],
              ["no certificate", noCert],
            ]
          ) {
            assertRefused(await nbdinfo(withCerts(server, certs)), what);
          }
          await logSays(server, /No certificate was found/);
          // Plain clients: nothing, not even the list, without TLS.
          const plain = `nbd://127.0.0.1:${server.port}/disk`;
          assertRefused(await nbdinfo(plain), "a plain client");
          assertRefused(await nbdinfo("--list", plain), "a plain LIST");
          assert.deepEqual(await plainOptionReplies(server.port), [
            [NBD_OPT.LIST, NBD_REP.ERR_TLS_REQD],
            [NBD_OPT.GO, NBD_REP.ERR_TLS_REQD],
          ]);
          // The server lives on for a good client.
          assertTlsInfo(await nbdinfo(withCerts(server, f.client)), "a good client afterwards");
        },
      );
    },
  );

  Deno.test(
    `${kind}: authz-simple and authz-list globs allow and deny by distinguished name`,
    needs("nbdinfo", "qemu-nbd", "qemu-storage-daemon"),
    async () => {
      await withTlsServer(kind, (f) => ({
        objects: [x509Object(f.server), `authz-simple,id=az0,identity=${keyval(f.clientDn)}`],
        authz: "az0",
      }), async (server, f) => {
        assertTlsInfo(await nbdinfo(withCerts(server, f.client)), "the allowed DN");
        assertRefused(await nbdinfo(withCerts(server, f.otherClient)), "another DN");
        await logSays(server, new RegExp(`TLS x509 authz check for ${f.otherClientDn} is denied`));
        assertTlsInfo(await nbdinfo(withCerts(server, f.client)), "the allowed DN afterwards");
      });
      const list = (f: TlsFixtures) =>
        JSON.stringify({
          "qom-type": "authz-list",
          id: "az0",
          policy: "deny",
          rules: [{ match: f.clientDn.replace(/CN=.*/, "CN=a*"), policy: "allow", format: "glob" }],
        });
      await withTlsServer(kind, (f) => ({
        objects: [x509Object(f.server), list(f)],
        authz: "az0",
      }), async (server, f) => {
        assertTlsInfo(await nbdinfo(withCerts(server, f.client)), "a DN the glob matches");
        assertRefused(await nbdinfo(withCerts(server, f.otherClient)), "a DN it does not");
        await logSays(server, new RegExp(`TLS x509 authz check for ${f.otherClientDn} is denied`));
      });
    },
  );

  Deno.test(
    `${kind}: as in QEMU 7.2, tls-authz checks nothing without verify-peer, nor PSK clients`,
    needs("nbdinfo", "qemu-nbd", "qemu-storage-daemon"),
    async () => {
      const denyAll = "authz-simple,id=az0,identity=nobody";
      await withTlsServer(kind, (f) => ({
        objects: [x509Object(f.server, false), denyAll],
        authz: "az0",
      }), async (server, f) => {
        assertTlsInfo(await nbdinfo(withCerts(server, f.otherClient)), "x509 without verify-peer");
      });
      await withTlsServer(kind, (f) => ({
        objects: [`tls-creds-psk,id=tls0,dir=${f.psk},endpoint=server`, denyAll],
        authz: "az0",
      }), async (server, f) => {
        const uri = server.uri.replace("nbds://", `nbds://${f.pskUser}@`);
        assertTlsInfo(await nbdinfo(`${uri}?tls-psk-file=${f.pskFile}`), "PSK");
      });
    },
  );

  Deno.test(
    `${kind}: PSK: the right key works; a wrong key and an unknown user are refused`,
    needs("nbdinfo", "qemu-nbd", "qemu-storage-daemon"),
    async () => {
      await withTlsServer(kind, (f) => ({
        objects: [`tls-creds-psk,id=tls0,dir=${f.psk},endpoint=server`],
      }), async (server, f, dir) => {
        const at = (user: string, file: string) =>
          server.uri.replace("nbds://", `nbds://${user}@`) + `?tls-psk-file=${file}`;
        assertTlsInfo(await nbdinfo(at(f.pskUser, f.pskFile)), "the right key");
        assertRefused(await nbdinfo(at(f.pskUser, f.wrongPskFile)), "a wrong key");
        const strangers = join(dir, "strangers.psk");
        await Deno.writeTextFile(strangers, `nobody:${"ab".repeat(32)}\n`);
        assertRefused(await nbdinfo(at("nobody", strangers)), "an unknown user");
        assertTlsInfo(await nbdinfo(at(f.pskUser, f.pskFile)), "the right key afterwards");
      });
    },
  );

  Deno.test(
    `${kind}: plaintext injected behind STARTTLS is never answered`,
    needs("qemu-nbd", "qemu-storage-daemon"),
    async () => {
      await withTlsServer(kind, (f) => ({ objects: [x509Object(f.server)] }), async (server, f) => {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
        try {
          const reader = new BufferedReader(conn);
          await reader.readExact(NBD_SIZE.GREETING);
          await writeAll(conn, encodeClientFlags(FIXED));
          // STARTTLS and a bogus option in one write: the bogus one is plaintext an
          // attacker slipped in, to be taken as sent inside TLS.
          const injected = 0x4242;
          await writeAll(conn, join2(encodeOption(NBD_OPT.STARTTLS), encodeOption(injected)));
          const ack = await readReply(reader);
          assert.deepEqual([ack.option, ack.type], [NBD_OPT.STARTTLS, NBD_REP.ACK]);
          assert.equal(reader.buffered, 0, "nothing but the ACK came in plaintext");
          const credentials = await TlsCredentials.x509({ endpoint: "client", dir: f.client });
          let session: TlsSession;
          try {
            session = await TlsSession.handshake(conn, credentials, { hostname: "127.0.0.1" });
          } catch (error) {
            // A server that fed the plaintext to TLS fails the handshake: not answered either.
            assert.ok(SUBJECT_IS_QEMU, `denbd failed the TLS handshake: ${error}`);
            return;
          } finally {
            credentials.release();
          }
          await writeAll(session, encodeOption(NBD_OPT.LIST));
          const secure = new BufferedReader(session);
          const answered: number[] = [];
          for (let reply = await readReply(secure);; reply = await readReply(secure)) {
            answered.push(reply.option);
            if (reply.type === NBD_REP.ACK) break;
          }
          assert.ok(answered.every((option) => option === NBD_OPT.LIST), `answered ${answered}`);
          await writeAll(session, encodeOption(NBD_OPT.ABORT));
          session.close();
        } finally {
          try {
            conn.close();
          } catch {
            // Closed with the session.
          }
        }
      });
    },
  );

  Deno.test(
    {
      name: `${kind}: a client stalling inside the TLS handshake is dropped at the handshake limit`,
      ignore: SUBJECT_IS_QEMU || needs("qemu-nbd").ignore,
    },
    async () => {
      await withTlsServer(kind, (f) => ({
        objects: [x509Object(f.server)],
        handshakeLimit: 1,
      }), async (server, f) => {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
        try {
          const reader = new BufferedReader(conn);
          await reader.readExact(NBD_SIZE.GREETING);
          await writeAll(conn, join2(encodeClientFlags(FIXED), encodeOption(NBD_OPT.STARTTLS)));
          await readReply(reader);
          // The start of a TLS record, then nothing.
          await writeAll(conn, new Uint8Array([0x16, 0x03, 0x01, 0x01, 0x00, 0x01]));
          const started = Date.now();
          const end = await Promise.race([
            conn.read(new Uint8Array(64)).catch(() => null),
            new Promise((resolve) => setTimeout(() => resolve("still open"), 5_000)),
          ]);
          assert.equal(end, null, "the server closed the connection");
          assert.ok(Date.now() - started < 3_000, `closed after ${Date.now() - started}ms`);
          await logSays(server, /handshake not finished within 1s/);
        } finally {
          conn.close();
        }
        assertTlsInfo(await nbdinfo(withCerts(server, f.client)), "a good client afterwards");
      });
    },
  );
}

const FIXED = NBD_CLIENT_FLAG.FIXED_NEWSTYLE | NBD_CLIENT_FLAG.NO_ZEROES;

/** Two byte arrays as one. */
function join2(first: Uint8Array, second: Uint8Array): Uint8Array {
  const both = new Uint8Array(first.length + second.length);
  both.set(first);
  both.set(second, first.length);
  return both;
}

/** One option reply (its data skipped). */
async function readReply(reader: BufferedReader): Promise<OptionReplyHeader> {
  const header = decodeOptionReplyHeader(await reader.readExact(NBD_SIZE.OPTION_REPLY_HEADER));
  await reader.skip(header.length);
  return header;
}

/** The replies to LIST and GO sent in plain text, as [option, reply type]. */
async function plainOptionReplies(port: number): Promise<number[][]> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const reader = new BufferedReader(conn);
    await reader.readExact(NBD_SIZE.GREETING);
    await writeAll(conn, encodeClientFlags(FIXED));
    const replies: number[][] = [];
    const go = new Uint8Array([0, 0, 0, 4, ...new TextEncoder().encode("disk"), 0, 0]);
    for (const [option, data] of [[NBD_OPT.LIST, new Uint8Array()], [NBD_OPT.GO, go]] as const) {
      await writeAll(conn, encodeOption(option, data));
      const reply = await readReply(reader);
      replies.push([reply.option, reply.type]);
    }
    return replies;
  } finally {
    conn.close();
  }
}

Deno.test(
  "serve: --tls-creds, --tls-authz and --tls-hostname are refused where qemu-nbd refuses them, in its words",
  needs("qemu-nbd"),
  async () => {
    const f = await tlsFixtures();
    await withTempDir(async (dir) => {
      const image = join(dir, "disk.img");
      await makeSparseImage(image, MiB, []);
      const server = x509Object(f.server);
      const cases: string[][] = [
        ["--tls-authz", "az0", image],
        ["--tls-hostname", "host", image],
        ["--object", server, "--tls-creds", "tls0", "--tls-hostname", "host", image],
        ["--tls-creds", "nosuch", image],
        ["--tls-creds", "nosuch", join(dir, "missing.img")],
        ["--object", "iothread,id=io0", "--tls-creds", "io0", image],
        [
          "--object",
          `tls-creds-x509,id=tls0,dir=${f.client},endpoint=client`,
          "--tls-creds",
          "tls0",
          image,
        ],
      ];
      const [command, prefix] = subjectServeCommand();
      for (const args of cases) {
        const expected = await run("qemu-nbd", ["-f", "raw", ...args]);
        const actual = await run(command, [...prefix, "-f", "raw", ...args]);
        assert.equal(actual.code, expected.code, `${args.join(" ")}: ${actual.stderr}`);
        assert.equal(lastMessage(actual.stderr), lastMessage(expected.stderr), args.join(" "));
      }
    });
  },
);

/** The last line of a program's standard error without its "program: " prefix. */
function lastMessage(stderr: string): string {
  const lines = stderr.trim().split("\n").filter((line) => /^(qemu-nbd|denbd serve): /.test(line));
  return (lines.at(-1) ?? "").replace(/^(qemu-nbd|denbd serve): /, "");
}

Deno.test(
  "daemon over QMP: TLS nbd-server-start answers as qsd; tls-authz is looked up at each client; deleted credentials stay with the server",
  needs("qemu-storage-daemon", "nbdinfo"),
  async () => {
    const f = await tlsFixtures();
    const images = async (dir: string) => {
      await makeSparseImage(join(dir, "d.img"), IMAGE_SIZE, [[0, 65536]]);
      await makeSparseImage(join(dir, "e.img"), MiB, []);
    };
    await withDaemonPair({ args: NODES, setup: images, ports: 1 }, async (pair) => {
      const server = { type: "inet", data: { host: "127.0.0.1", port: "$PORT0" } };
      await pair.expectSame([
        qmp("object-add", {
          "qom-type": "tls-creds-x509",
          id: "tls0",
          dir: f.server,
          endpoint: "server",
          "verify-peer": true,
        }),
        qmp("object-add", { "qom-type": "authz-simple", id: "az0", identity: f.clientDn }),
        qmp("nbd-server-start", { addr: server, "tls-creds": "tls0", "tls-authz": "az0" }),
        qmp("block-export-add", { type: "nbd", id: "e0", "node-name": "f0", name: "disk" }),
      ]);
      const uri = (daemon: RunningDaemon, certs: string) =>
        `nbds://127.0.0.1:${daemon.place.ports[0]}/disk?tls-certificates=${certs}`;
      for (const [certs, allowed] of [[f.client, true], [f.otherClient, false]] as const) {
        const results = await pair.both((daemon) => nbdinfo(uri(daemon, certs)));
        for (const [kind, result] of Object.entries(results)) {
          if (allowed) assertTlsInfo(result, `${kind}: ${certs}`);
          else assertRefused(result, `${kind}: ${certs}`);
        }
      }
      // Deleted, the authorization object denies everyone from then on, in both.
      await pair.expectSame([qmp("object-del", { id: "az0" })]);
      const results = await pair.both((daemon) => nbdinfo(uri(daemon, f.client)));
      for (const [kind, result] of Object.entries(results)) assertRefused(result, kind);
      for (const daemon of [pair.qsd, pair.denbd]) {
        for (let waited = 0; waited < 5_000; waited += 50) {
          if (/Cannot find QAuthZ object ID az0/.test(daemon.process.stderr())) break;
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        assert.match(daemon.process.stderr(), /Cannot find QAuthZ object ID az0/, daemon.kind);
      }
      // Deleted, the credentials stay with the running server in both: TLS clients still
      // get in (re-added, the authorization object lets them through again).
      await pair.expectSame([
        qmp("object-add", { "qom-type": "authz-simple", id: "az0", identity: f.clientDn }),
        qmp("object-del", { id: "tls0" }),
      ]);
      const kept = await pair.both((daemon) => nbdinfo(uri(daemon, f.client)));
      for (const [kind, result] of Object.entries(kept)) assertTlsInfo(result, kind);
    }, { compareStderr: false });
  },
);
