/**
 * denbd's client over TLS against the real servers as TLS peers: qemu-nbd
 * and qemu-storage-daemon with tls-creds-x509 / tls-creds-psk objects, and
 * nbdkit with --tls=require. What libnbd's tools print over TLS is the
 * reference for `info`, `map` and `dump`. Refusals are checked for a clear
 * message: a server certificate from another CA, for another host, or
 * expired or revoked; a PSK user the server does not know and a wrong key; a plain
 * `nbd://` URI to a server that requires TLS; an `nbds://` URI to a server
 * without TLS (never a fall back to plain text).
 *
 * qemu-nbd refuses to start with an expired certificate (its sanity check),
 * so the expired case runs against nbdkit, which serves it.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { NbdClient } from "../../src/nbd/client/client.ts";
import {
  type CommandResult,
  denbdCommand,
  freePort,
  launch,
  makeSparseImage,
  needs,
  run,
  type ServerProcess,
  sha256File,
  withStarted,
  withTempDir,
} from "./harness.ts";
import { startNbdkit } from "./peers.ts";
import { type TlsFixtures, tlsFixtures } from "./tls_fixtures.ts";

const MiB = 1024 * 1024;
const IMAGE_SIZE = 8 * MiB;
const REGIONS = [[0, 65536], [3 * MiB, 8192], [7 * MiB, 512 * 1024]] as const;

/** Run `denbd ARGS...` from source. */
function denbd(...args: string[]): Promise<CommandResult> {
  const [deno, prefix] = denbdCommand();
  return run(deno, [...prefix, ...args]);
}

/** `result` succeeded; the message shows its stderr otherwise. */
function succeeded(result: CommandResult, what: string): void {
  assert.equal(result.code, 0, `${what}: exit ${result.code}\n${result.stderr}`);
}

/** `result` failed with exit 1 and one stderr line matching `message`. */
function refused(result: CommandResult, message: RegExp, what: string): void {
  assert.equal(result.code, 1, `${what}: exit ${result.code}\n${result.stdout}${result.stderr}`);
  assert.match(result.stderr, message, what);
  assert.doesNotMatch(result.stderr, /^\s+at /m, `${what}: a stack trace\n${result.stderr}`);
}

/** How a server proves itself and what it asks of clients. */
type ServerCredentials =
  | { readonly x509: string; readonly verifyPeer?: boolean }
  | { readonly psk: string };

/** QEMU's --object for `credentials`, with id tls0. */
function qemuTlsObject(credentials: ServerCredentials): string {
  if ("psk" in credentials) return `tls-creds-psk,id=tls0,dir=${credentials.psk},endpoint=server`;
  const verify = credentials.verifyPeer ? "on" : "off";
  return `tls-creds-x509,id=tls0,dir=${credentials.x509},endpoint=server,verify-peer=${verify}`;
}

/** qemu-nbd serving `image` with TLS required, on TCP or on the Unix socket `socket`. */
function startQemuNbdTls(
  image: string,
  credentials: ServerCredentials,
  socket?: string,
): Promise<ServerProcess> {
  const port = freePort();
  return launch({
    command: "qemu-nbd",
    args: [
      "--object",
      qemuTlsObject(credentials),
      "--tls-creds",
      "tls0",
      "-f",
      "raw",
      "-t",
      ...(socket ? ["-k", socket] : ["-b", "127.0.0.1", "-p", String(port)]),
      image,
    ],
    uri: socket ? `nbds+unix:///?socket=${socket}` : `nbds://127.0.0.1:${port}/`,
    listen: socket ?? { hostname: "127.0.0.1", port },
  });
}

/** qemu-storage-daemon exporting `image` as "disk" with TLS required. */
function startQsdTls(image: string, credentials: ServerCredentials): Promise<ServerProcess> {
  const port = freePort();
  return launch({
    command: "qemu-storage-daemon",
    args: [
      "--object",
      qemuTlsObject(credentials),
      "--blockdev",
      `driver=file,node-name=file0,filename=${image}`,
      "--blockdev",
      "driver=raw,node-name=format0,file=file0",
      "--nbd-server",
      `addr.type=inet,addr.host=127.0.0.1,addr.port=${port},tls-creds=tls0`,
      "--export",
      "type=nbd,id=export0,node-name=format0,name=disk,writable=on",
    ],
    uri: `nbds://127.0.0.1:${port}/disk`,
    listen: { hostname: "127.0.0.1", port },
  });
}

/** nbdkit's memory plugin (`size` bytes) with --tls=require and `tlsArgs`. */
function startNbdkitTls(tlsArgs: readonly string[], size = IMAGE_SIZE): Promise<ServerProcess> {
  return startNbdkit("memory", [String(size)], { tls: tlsArgs });
}

/** `uri` with the query parameters `parameters` added. */
function withQuery(uri: string, parameters: Record<string, string>): string {
  const query = Object.entries(parameters).map(([key, value]) => `${key}=${value}`).join("&");
  return `${uri}${uri.includes("?") ? "&" : "?"}${query}`;
}

/** `uri` with the userinfo `user@`. */
function withUser(uri: string, user: string): string {
  return uri.replace("://", `://${user}@`);
}

/** A sparse raw image with data in REGIONS, in `dir`. */
async function image(dir: string, name = "disk.raw"): Promise<string> {
  const path = join(dir, name);
  await makeSparseImage(path, IMAGE_SIZE, REGIONS);
  return path;
}

let fixtures: TlsFixtures;
async function certificates(): Promise<TlsFixtures> {
  fixtures ??= await tlsFixtures();
  return fixtures;
}

/**
 * Run `body` with qemu-nbd serving a fresh image (at `path` in the temporary
 * `dir`) with TLS required and the X.509 server directory `x509`.
 */
async function withQemuNbdTls(
  x509: string,
  body: (qemu: ServerProcess, dir: string, path: string) => Promise<void>,
): Promise<void> {
  await withTempDir(async (dir) => {
    const path = await image(dir);
    await withStarted(() => startQemuNbdTls(path, { x509 }), (qemu) => body(qemu, dir, path));
  });
}

/** `denbd info URI` succeeds and prints what `nbdinfo URI` prints (content included); its output. */
async function infoAsNbdinfo(uri: string, what: string): Promise<string> {
  const [mine, theirs] = [await denbd("info", uri), await run("nbdinfo", [uri])];
  succeeded(theirs, `nbdinfo ${what}`);
  succeeded(mine, `denbd info ${what}`);
  assert.equal(mine.stdout, theirs.stdout, what);
  return mine.stdout;
}

/** `denbd copy [flags] URI FILE` succeeds and FILE holds what `image` holds. */
async function copiesOut(uri: string, dir: string, image: string, ...flags: string[]) {
  const out = join(dir, "out.raw");
  succeeded(await denbd("copy", ...flags, uri, out), `copy out of ${uri}`);
  assert.equal(await sha256File(out), await sha256File(image));
}

Deno.test(
  "x509 with qemu-nbd: info, list, map and dump print what nbdinfo and nbddump print",
  needs("qemu-nbd", "nbdinfo", "nbddump", "certtool"),
  async () => {
    const { server, client } = await certificates();
    await withQemuNbdTls(server, async (qemu) => {
      const uri = withQuery(qemu.uri, { "tls-certificates": client });
      const comparisons: [string[], string, string[]][] = [
        [["info", uri], "nbdinfo", [uri]],
        [["info", "--json", uri], "nbdinfo", ["--json", uri]],
        [["list", uri], "nbdinfo", ["--list", "--no-content", uri]],
        [["map", uri], "nbdinfo", ["--map", uri]],
        [["dump", "-n", "70000", uri], "nbddump", ["-n", "70000", uri]],
      ];
      for (const [ours, tool, args] of comparisons) {
        const [mine, theirs] = [await denbd(...ours), await run(tool, args)];
        succeeded(theirs, `${tool} ${args.join(" ")}`);
        succeeded(mine, `denbd ${ours.join(" ")}`);
        assert.equal(mine.stdout, theirs.stdout, `denbd ${ours.join(" ")} vs ${tool}`);
      }
      const info = await denbd("info", uri);
      assert.match(info.stdout, /^protocol: newstyle-fixed with TLS, using structured packets$/m);
      assert.equal((await denbd("info", "--can", "tls", uri)).code, 0);
      assert.equal((await denbd("info", "--is", "tls", uri)).code, 0);
    });
  },
);

Deno.test(
  "x509 with qemu-nbd: copy out and in, over a pool of connections",
  needs("qemu-nbd", "certtool"),
  async () => {
    const { server, client } = await certificates();
    await withQemuNbdTls(server, async (qemu, dir, path) => {
      const uri = withQuery(qemu.uri, { "tls-certificates": client });
      await copiesOut(uri, dir, path, "--connections", "4");
      // In: a different image over the export, then read back.
      const other = join(dir, "other.raw");
      await makeSparseImage(other, IMAGE_SIZE, [[MiB, 4096], [5 * MiB, 65536]]);
      succeeded(await denbd("copy", other, uri), "copy in");
      const back = join(dir, "back.raw");
      succeeded(await denbd("copy", uri, back), "copy back");
      assert.equal(await sha256File(back), await sha256File(other));
    });
  },
);

Deno.test(
  "x509 over a Unix socket: the server certificate is checked against the CA",
  needs("qemu-nbd", "nbdinfo", "certtool"),
  async () => {
    const { server, client, foreignServer } = await certificates();
    await withTempDir(async (dir) => {
      const path = await image(dir);
      const socket = join(dir, "nbd.sock");
      await withStarted(() => startQemuNbdTls(path, { x509: server }, socket), async (qemu) => {
        const uri = withQuery(qemu.uri, { "tls-certificates": client });
        const info = await infoAsNbdinfo(uri, "over nbds+unix");
        assert.match(info, /with TLS/);
        assert.match(info, new RegExp(`uri: nbds\\+unix:///\\?socket=${socket}&`));
      });
      const foreignSocket = join(dir, "foreign.sock");
      await withStarted(
        () => startQemuNbdTls(path, { x509: foreignServer }, foreignSocket),
        async (qemu) => {
          refused(
            await denbd("info", withQuery(qemu.uri, { "tls-certificates": client })),
            /known issuer|not trusted|unknown ca/i,
            "a foreign CA's server over a Unix socket",
          );
        },
      );
    });
  },
);

Deno.test(
  "a server certificate from another CA is refused, unless tls-verify-peer=0",
  needs("qemu-nbd", "certtool"),
  async () => {
    const { foreignServer, client } = await certificates();
    await withQemuNbdTls(foreignServer, async (qemu, dir) => {
      const uri = withQuery(qemu.uri, { "tls-certificates": client });
      refused(await denbd("info", uri), /known issuer|not trusted|unknown ca/i, "foreign CA");
      refused(await denbd("copy", uri, join(dir, "x")), /issuer|trusted/i, "copy, foreign CA");
      const unchecked = withQuery(uri, { "tls-verify-peer": "0" });
      succeeded(await denbd("info", unchecked), "tls-verify-peer=0");
    });
  },
);

Deno.test(
  "a server certificate for another host is refused; tls-hostname names the right one",
  needs("qemu-nbd", "certtool"),
  async () => {
    const { wrongHostServer, client } = await certificates();
    await withQemuNbdTls(wrongHostServer, async (qemu) => {
      const uri = withQuery(qemu.uri, { "tls-certificates": client });
      refused(await denbd("info", uri), /hostname|host name/i, "wrong host");
      const named = withQuery(uri, { "tls-hostname": "other.invalid" });
      succeeded(await denbd("info", named), "tls-hostname=other.invalid");
    });
  },
);

Deno.test(
  "an expired server certificate is refused (nbdkit serves it), unless tls-verify-peer=0",
  needs("nbdkit", "certtool"),
  async () => {
    const { expiredServer, client } = await certificates();
    await withStarted(
      () => startNbdkitTls([`--tls-certificates=${expiredServer}`]),
      async (nbdkit) => {
        const uri = withQuery(nbdkit.uri, { "tls-certificates": client });
        // GnuTLS marks an expired certificate invalid as well, and QEMU's wording for that wins.
        refused(await denbd("info", uri), /expired|not trusted/i, "expired");
        succeeded(await denbd("info", withQuery(uri, { "tls-verify-peer": "0" })), "unchecked");
      },
    );
  },
);

Deno.test(
  "a revoked server certificate is refused when the client's directory has the CRL",
  needs("qemu-nbd", "certtool"),
  async () => {
    const { revokedServer, client, crlClient } = await certificates();
    await withQemuNbdTls(revokedServer, async (qemu) => {
      refused(
        await denbd("info", withQuery(qemu.uri, { "tls-certificates": crlClient })),
        /revoked/i,
        "revoked, with ca-crl.pem",
      );
      // Without the CRL the client cannot know.
      succeeded(
        await denbd("info", withQuery(qemu.uri, { "tls-certificates": client })),
        "revoked, no ca-crl.pem",
      );
    });
  },
);

Deno.test(
  "qemu-nbd with verify-peer=on: a client certificate is presented, none is refused",
  needs("qemu-nbd", "certtool"),
  async () => {
    const { server, client } = await certificates();
    await withTempDir(async (dir) => {
      const path = await image(dir);
      // The CA alone: the client has no certificate to present.
      const caOnly = join(dir, "ca-only");
      await Deno.mkdir(caOnly);
      await Deno.copyFile(join(client, "ca-cert.pem"), join(caOnly, "ca-cert.pem"));
      await withStarted(
        () => startQemuNbdTls(path, { x509: server, verifyPeer: true }),
        async (qemu) => {
          const info = await denbd("info", withQuery(qemu.uri, { "tls-certificates": client }));
          succeeded(info, "with a client certificate");
          assert.match(info.stdout, /with TLS/);
          const without = await denbd("info", withQuery(qemu.uri, { "tls-certificates": caOnly }));
          assert.equal(without.code, 1, without.stdout);
          assert.match(without.stderr, /TLS|handshake|certificate|closed/i);
        },
      );
    });
  },
);

Deno.test(
  "PSK with qemu-nbd and nbdkit: the right user and key work, another user or key does not",
  needs("qemu-nbd", "nbdkit", "nbdinfo", "certtool"),
  async () => {
    const { psk, pskFile, pskUser, wrongPskFile } = await certificates();
    await withTempDir(async (dir) => {
      const path = await image(dir);
      const strangerFile = join(dir, "stranger.psk");
      await Deno.writeTextFile(strangerFile, `bob:${"0123456789abcdef".repeat(4)}\n`);
      const servers = [
        () => startQemuNbdTls(path, { psk }),
        () => startNbdkitTls([`--tls-psk=${pskFile}`]),
      ];
      for (const start of servers) {
        await withStarted(start, async (peer) => {
          const uri = withQuery(withUser(peer.uri, pskUser), { "tls-psk-file": pskFile });
          const info = await infoAsNbdinfo(uri, `over PSK as ${pskUser}`);
          assert.match(info, /with TLS/);
          assert.match(info, new RegExp(`uri: nbds://${pskUser}@127\\.0\\.0\\.1:`));
          const wrongKey = withQuery(withUser(peer.uri, pskUser), { "tls-psk-file": wrongPskFile });
          refused(await denbd("info", wrongKey), /TLS|handshake|decrypt|closed/i, "wrong key");
          const stranger = withQuery(withUser(peer.uri, "bob"), { "tls-psk-file": strangerFile });
          refused(await denbd("info", stranger), /TLS|handshake|closed|user/i, "unknown user");
          refused(
            await denbd(
              "info",
              withQuery(withUser(peer.uri, "carol"), { "tls-psk-file": pskFile }),
            ),
            /carol/,
            "a user missing from the client's own file",
          );
        });
      }
    });
  },
);

Deno.test(
  "a plain nbd:// URI to a server that requires TLS fails clearly (LIST too)",
  needs("qemu-nbd", "certtool"),
  async () => {
    const { server } = await certificates();
    await withQemuNbdTls(server, async (qemu, dir) => {
      const plain = qemu.uri.replace("nbds://", "nbd://");
      for (const command of [["info"], ["list"], ["map"], ["dump"]]) {
        refused(await denbd(...command, plain), /requires TLS.*nbds:\/\//, command[0]);
      }
      refused(await denbd("copy", plain, join(dir, "x")), /requires TLS/, "copy");
    });
  },
);

Deno.test(
  "an nbds:// URI to a server without TLS never falls back to plain text",
  needs("qemu-nbd", "nbdkit", "certtool"),
  async () => {
    await certificates();
    await withTempDir(async (dir) => {
      const path = await image(dir);
      const port = freePort();
      const plainServers = [
        () =>
          launch({
            command: "qemu-nbd",
            args: ["-f", "raw", "-t", "-b", "127.0.0.1", "-p", String(port), path],
            uri: `nbds://127.0.0.1:${port}/`,
            listen: { hostname: "127.0.0.1", port },
          }),
      ];
      for (const start of plainServers) {
        await withStarted(start, async (peer) => {
          refused(await denbd("info", peer.uri), /refused STARTTLS.*TLS is required/, "info");
          refused(await denbd("list", peer.uri), /refused STARTTLS.*TLS is required/, "list");
          await assert.rejects(NbdClient.connect(peer.uri, { timeoutMs: 5000 }), /TLS is required/);
        });
      }
      // The library's "allow" mode goes on in plain text with the same server.
      await withStarted(plainServers[0], async (peer) => {
        const client = await NbdClient.connect(peer.uri.replace("nbds://", "nbd://"), {
          tls: "allow",
        });
        assert.equal(client.tls, false);
        await client.disconnect();
      });
    });
  },
);

Deno.test(
  "qemu-storage-daemon as the TLS server: info and copy",
  needs("qemu-storage-daemon", "nbdinfo", "certtool"),
  async () => {
    const { server, client } = await certificates();
    await withTempDir(async (dir) => {
      const path = await image(dir);
      await withStarted(() => startQsdTls(path, { x509: server }), async (qsd) => {
        const uri = withQuery(qsd.uri, { "tls-certificates": client });
        await infoAsNbdinfo(uri, "from qsd");
        await copiesOut(uri, dir, path);
      });
    });
  },
);

Deno.test(
  "copy from one TLS server to another (qemu-nbd X.509 to nbdkit PSK), and the library in allow mode",
  needs("qemu-nbd", "nbdkit", "certtool"),
  async () => {
    const { server, client, pskFile, pskUser } = await certificates();
    await withQemuNbdTls(server, async (qemu, dir, path) => {
      await withStarted(() => startNbdkitTls([`--tls-psk=${pskFile}`]), async (nbdkit) => {
        const from = withQuery(qemu.uri, { "tls-certificates": client });
        const to = withQuery(withUser(nbdkit.uri, pskUser), { "tls-psk-file": pskFile });
        succeeded(await denbd("copy", from, to), "copy between TLS servers");
        const back = join(dir, "back.raw");
        succeeded(await denbd("copy", to, back), "copy back from nbdkit");
        assert.equal(await sha256File(back), await sha256File(path));
        // nbdkit allows multi-conn: every connection of the pool does TLS.
        const pool = await NbdClient.connect(to, { connections: 4 });
        try {
          assert.equal(pool.connectionCount, 4);
          assert.equal(pool.tls, true);
          const [offset, length] = REGIONS[2];
          const expected = (await Deno.readFile(path)).subarray(offset, offset + length);
          assert.deepEqual(await pool.read(offset, length), expected);
        } finally {
          await pool.disconnect();
        }
        // "allow" on a plain URI takes TLS when the server offers it.
        const allowed = await NbdClient.connect(from.replace("nbds://", "nbd://"), {
          tls: "allow",
          connections: 2,
        });
        try {
          assert.equal(allowed.tls, true);
          assert.deepEqual(
            await allowed.read(0, 4),
            (await Deno.readFile(path)).subarray(0, 4),
          );
        } finally {
          await allowed.disconnect();
        }
      });
    });
  },
);
