/**
 * denbd's TLS engine against GnuTLS's own tools: TlsSession as a client of
 * gnutls-serv (echo mode) and as a server for gnutls-cli, with X.509
 * (client certificates required) and PSK, and refusals of certificates from
 * a foreign CA. gnutls-serv has no listen-address option: it listens on
 * every interface of a fresh port for the length of one test, and is only
 * ever reached through 127.0.0.1.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { writeAll } from "../../src/io/byte-stream.ts";
import { TlsCredentials } from "../../src/tls/credentials.ts";
import { TlsSession } from "../../src/tls/session.ts";
import { freePort, launch, needs, run, type ServerProcess } from "./harness.ts";
import { tlsFixtures } from "./tls_fixtures.ts";

/** The most one exchange with a GnuTLS tool may take. */
const EXCHANGE_MS = 20_000;
/** QEMU's PSK priority, which the GnuTLS tools need to offer PSK at all. */
const PSK_PRIORITY = "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK";

const fixtures = await tlsFixtures();

/** gnutls-serv in echo mode on a fresh port with `args`. */
async function startGnutlsServ(
  args: readonly string[],
): Promise<ServerProcess & { port: number }> {
  const port = freePort();
  const server = await launch({
    command: "gnutls-serv",
    args: ["--echo", "--port", String(port), ...args],
    uri: `tls://127.0.0.1:${port}`,
    listen: { hostname: "127.0.0.1", port },
  });
  return Object.assign(server, { port });
}

/** gnutls-serv's X.509 arguments for server directory `dir`, requiring a client certificate. */
function servX509(dir: string): string[] {
  return [
    "--x509cafile",
    join(dir, "ca-cert.pem"),
    "--x509certfile",
    join(dir, "server-cert.pem"),
    "--x509keyfile",
    join(dir, "server-key.pem"),
    "--require-client-cert",
    "--verify-client-cert",
  ];
}

/** Connect to 127.0.0.1:`port` and handshake as a client; the connection is closed on failure. */
async function connectTls(
  port: number,
  credentials: TlsCredentials,
  hostname?: string,
): Promise<TlsSession> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    return await TlsSession.handshake(conn, credentials, { hostname });
  } catch (error) {
    conn.close();
    throw error;
  }
}

/** Send `text` through `session` and read back as many bytes (gnutls-serv echoes). */
async function echo(session: TlsSession, text: string): Promise<string> {
  const sent = new TextEncoder().encode(text);
  await writeAll(session, sent);
  const received = new Uint8Array(sent.length);
  for (let got = 0; got < received.length;) {
    const count = await session.read(received.subarray(got));
    if (count === null) throw new Error(`echo ended after ${got} bytes`);
    got += count;
  }
  return new TextDecoder().decode(received);
}

/** The hex key of `user` in a `user:hex` keys file. */
async function pskKey(file: string, user: string): Promise<string> {
  const line = (await Deno.readTextFile(file)).split("\n").find((l) => l.startsWith(`${user}:`));
  assert.ok(line, `no key for ${user} in ${file}`);
  return line.slice(user.length + 1);
}

/**
 * Accept one connection on a fresh 127.0.0.1 port and handshake it with
 * `credentials` while gnutls-cli (with `args`) connects, sends "ping" and
 * prints what it gets (after `firstInput`, such as an inline command); the
 * server answers "pong" and closes. Resolves to the
 * server's handshake outcome and what gnutls-cli printed.
 */
async function serveGnutlsCli(
  credentials: TlsCredentials,
  args: readonly string[],
  firstInput = "",
): Promise<{ session: PromiseSettledResult<TlsSession>; cliOutput: string; received: string }> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  const cli = new Deno.Command("gnutls-cli", {
    args: ["--port", String(port), ...args, "127.0.0.1"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(EXCHANGE_MS),
  }).spawn();
  const stdin = cli.stdin.getWriter();
  // Should gnutls-cli end without connecting, stop waiting for it.
  const closeListener = () => {
    try {
      listener.close();
    } catch {
      // Closed already.
    }
  };
  cli.status.then(closeListener);
  let received = "";
  const serve = (async () => {
    let conn: Deno.Conn;
    try {
      conn = await listener.accept();
    } finally {
      closeListener();
    }
    let session: TlsSession;
    try {
      session = await TlsSession.handshake(conn, credentials);
    } catch (error) {
      conn.close();
      throw error;
    }
    await stdin.write(new TextEncoder().encode(`${firstInput}ping\n`));
    const buffer = new Uint8Array(64);
    while (!received.includes("\n")) {
      const count = await session.read(buffer);
      if (count === null) break;
      received += new TextDecoder().decode(buffer.subarray(0, count));
    }
    await writeAll(session, new TextEncoder().encode("pong\n"));
    session.close();
    await session.closed;
    return session;
  })();
  const [session] = await Promise.allSettled([serve]);
  await stdin.close().catch(() => {});
  const output = await cli.output();
  const decoder = new TextDecoder();
  return {
    session,
    cliOutput: decoder.decode(output.stdout) + decoder.decode(output.stderr),
    received,
  };
}

Deno.test({
  name: "TlsSession client (x509, client certificate) against gnutls-serv",
  ...needs("gnutls-serv"),
  async fn() {
    const server = await startGnutlsServ(servX509(fixtures.server));
    const credentials = await TlsCredentials.x509({ endpoint: "client", dir: fixtures.client });
    try {
      const session = await connectTls(server.port, credentials, "127.0.0.1");
      assert.equal(session.peer.identity, "C=GB,O=denbd test,CN=localhost");
      assert.equal(await echo(session, "hello gnutls-serv\n"), "hello gnutls-serv\n");
      const large = "x".repeat(200_000) + "\n";
      assert.equal(await echo(session, large), large);
      session.close();
      await session.closed;
    } finally {
      credentials.release();
      await server.stop();
    }
  },
});

Deno.test({
  name: "TlsSession client refuses gnutls-serv's certificate from a foreign CA",
  ...needs("gnutls-serv"),
  async fn() {
    const server = await startGnutlsServ(servX509(fixtures.foreignServer));
    const credentials = await TlsCredentials.x509({ endpoint: "client", dir: fixtures.client });
    try {
      await assert.rejects(
        connectTls(server.port, credentials, "127.0.0.1"),
        /The certificate hasn't got a known issuer/,
      );
    } finally {
      credentials.release();
      await server.stop();
    }
  },
});

Deno.test({
  name: "TlsSession client (PSK) against gnutls-serv",
  ...needs("gnutls-serv"),
  async fn() {
    const server = await startGnutlsServ([
      "--pskpasswd",
      fixtures.pskFile,
      "--priority",
      PSK_PRIORITY,
    ]);
    const credentials = await TlsCredentials.psk({
      endpoint: "client",
      keysFile: fixtures.pskFile,
      username: fixtures.pskUser,
    });
    const wrong = await TlsCredentials.psk({
      endpoint: "client",
      keysFile: fixtures.wrongPskFile,
      username: fixtures.pskUser,
    });
    try {
      const session = await connectTls(server.port, credentials);
      assert.equal(await echo(session, "psk hello\n"), "psk hello\n");
      session.close();
      await session.closed;
      await assert.rejects(connectTls(server.port, wrong), /^DenbdError: TLS handshake failed/);
    } finally {
      credentials.release();
      wrong.release();
      await server.stop();
    }
  },
});

Deno.test({
  name: "TlsSession server (x509, verify-peer) for gnutls-cli: identity and data",
  ...needs("gnutls-cli"),
  async fn() {
    const credentials = await TlsCredentials.x509({ endpoint: "server", dir: fixtures.server });
    try {
      const { session, cliOutput, received } = await serveGnutlsCli(credentials, [
        "--x509cafile",
        join(fixtures.client, "ca-cert.pem"),
        "--x509certfile",
        join(fixtures.client, "client-cert.pem"),
        "--x509keyfile",
        join(fixtures.client, "client-key.pem"),
      ]);
      assert.equal(session.status, "fulfilled", cliOutput);
      if (session.status === "fulfilled") {
        assert.equal(session.value.peer.identity, fixtures.clientDn);
      }
      assert.equal(received, "ping\n");
      assert.match(cliOutput, /pong/);
    } finally {
      credentials.release();
    }
  },
});

Deno.test({
  name: "TlsSession server (x509, verify-peer) refuses gnutls-cli without a certificate",
  ...needs("gnutls-cli"),
  async fn() {
    const credentials = await TlsCredentials.x509({ endpoint: "server", dir: fixtures.server });
    try {
      const { session } = await serveGnutlsCli(credentials, [
        "--x509cafile",
        join(fixtures.client, "ca-cert.pem"),
      ]);
      assert.equal(session.status, "rejected");
      if (session.status === "rejected") {
        assert.equal(session.reason.message, "Verify failed: No certificate was found.");
      }
    } finally {
      credentials.release();
    }
  },
});

Deno.test({
  name: "TlsSession server (PSK) for gnutls-cli: the username is the identity",
  ...needs("gnutls-cli"),
  async fn() {
    const credentials = await TlsCredentials.psk({
      endpoint: "server",
      keysFile: fixtures.pskFile,
    });
    try {
      const { session, cliOutput, received } = await serveGnutlsCli(credentials, [
        "--priority",
        PSK_PRIORITY,
        "--pskusername",
        fixtures.pskUser,
        "--pskkey",
        await pskKey(fixtures.pskFile, fixtures.pskUser),
      ]);
      assert.equal(session.status, "fulfilled", cliOutput);
      if (session.status === "fulfilled") {
        assert.equal(session.value.peer.identity, fixtures.pskUser);
      }
      assert.equal(received, "ping\n");
      assert.match(cliOutput, /pong/);
    } finally {
      credentials.release();
    }
  },
});

/** A credentials load that must fail: denbd's options and QEMU's `--object` for the same. */
interface LoadCase {
  readonly name: string;
  readonly object: string;
  readonly load: () => Promise<TlsCredentials>;
}

/** A new directory under the fixtures holding `files`: name -> a file to copy, or `{ text }`. */
async function assemble(
  name: string,
  files: Record<string, string | { text: string }>,
): Promise<string> {
  const dir = join(fixtures.root, name);
  await Deno.mkdir(dir, { recursive: true });
  for (const [target, source] of Object.entries(files)) {
    if (typeof source === "string") await Deno.copyFile(source, join(dir, target));
    else await Deno.writeTextFile(join(dir, target), source.text);
  }
  return dir;
}

Deno.test({
  name: "credential load errors are qemu-nbd's, word for word",
  ...needs("qemu-nbd"),
  async fn() {
    const leafCa = await assemble("leaf-ca", {
      "ca-cert.pem": join(fixtures.server, "server-cert.pem"),
      "server-cert.pem": join(fixtures.server, "server-cert.pem"),
      "server-key.pem": join(fixtures.server, "server-key.pem"),
    });
    const noKey = await assemble("no-key", {
      "ca-cert.pem": join(fixtures.server, "ca-cert.pem"),
      "server-cert.pem": join(fixtures.server, "server-cert.pem"),
    });
    const badHex = await assemble("bad-hex", { "keys.psk": { text: "qemu:zz11\n" } });
    const shortKey = await assemble("short-key", { "keys.psk": { text: "qemu:0102\n" } });
    const cases: LoadCase[] = [
      {
        name: "missing directory",
        object: "tls-creds-x509,id=t,dir=/nonexistent,endpoint=server",
        load: () => TlsCredentials.x509({ endpoint: "server", dir: "/nonexistent" }),
      },
      {
        name: "missing server key",
        object: `tls-creds-x509,id=t,dir=${noKey},endpoint=server`,
        load: () => TlsCredentials.x509({ endpoint: "server", dir: noKey }),
      },
      {
        name: "CA file holding a leaf certificate",
        object: `tls-creds-x509,id=t,dir=${leafCa},endpoint=server`,
        load: () => TlsCredentials.x509({ endpoint: "server", dir: leafCa }),
      },
      {
        name: "expired server certificate",
        object: `tls-creds-x509,id=t,dir=${fixtures.expiredServer},endpoint=server`,
        load: () => TlsCredentials.x509({ endpoint: "server", dir: fixtures.expiredServer }),
      },
      {
        name: "expired client certificate",
        object: `tls-creds-x509,id=t,dir=${fixtures.expiredClient},endpoint=client`,
        load: () => TlsCredentials.x509({ endpoint: "client", dir: fixtures.expiredClient }),
      },
      {
        name: "client certificate from another CA",
        object: `tls-creds-x509,id=t,dir=${fixtures.foreignClient},endpoint=client`,
        load: () => TlsCredentials.x509({ endpoint: "client", dir: fixtures.foreignClient }),
      },
      {
        name: "PSK username not in the file",
        object: `tls-creds-psk,id=t,dir=${fixtures.psk},endpoint=client,username=nobody`,
        load: () =>
          TlsCredentials.psk({
            endpoint: "client",
            keysFile: fixtures.pskFile,
            username: "nobody",
          }),
      },
      {
        name: "PSK server with a username",
        object: `tls-creds-psk,id=t,dir=${fixtures.psk},endpoint=server,username=x`,
        load: () =>
          TlsCredentials.psk({ endpoint: "server", keysFile: fixtures.pskFile, username: "x" }),
      },
      {
        name: "PSK key not hex",
        object: `tls-creds-psk,id=t,dir=${badHex},endpoint=client`,
        load: () => TlsCredentials.psk({ endpoint: "client", keysFile: join(badHex, "keys.psk") }),
      },
      {
        name: "PSK key too short",
        object: `tls-creds-psk,id=t,dir=${shortKey},endpoint=client`,
        load: () =>
          TlsCredentials.psk({ endpoint: "client", keysFile: join(shortKey, "keys.psk") }),
      },
    ];
    for (const loadCase of cases) {
      const qemu = await run("qemu-nbd", ["--object", loadCase.object, "/nonexistent"]);
      const qemuMessage = qemu.stderr.trim().replace(/^qemu-nbd: /, "");
      await assert.rejects(loadCase.load(), (error: Error) => {
        assert.equal(error.message, qemuMessage, loadCase.name);
        return true;
      });
    }
  },
});

Deno.test({
  name: "TlsSession server answers a TLS 1.3 key update from gnutls-cli (^rekey^)",
  ...needs("gnutls-cli"),
  async fn() {
    const credentials = await TlsCredentials.x509({ endpoint: "server", dir: fixtures.server });
    try {
      const { session, cliOutput, received } = await serveGnutlsCli(
        credentials,
        [
          "--inline-commands",
          "--x509cafile",
          join(fixtures.client, "ca-cert.pem"),
          "--x509certfile",
          join(fixtures.client, "client-cert.pem"),
          "--x509keyfile",
          join(fixtures.client, "client-key.pem"),
        ],
        "^rekey^\n",
      );
      assert.equal(session.status, "fulfilled", cliOutput);
      if (session.status === "fulfilled") assert.match(session.value.description, /^TLS1\.3/);
      assert.equal(received, "ping\n");
      // gnutls-cli decrypts the answer under the keys both sides updated to.
      assert.match(cliOutput, /Rekey was completed[^]*pong/);
    } finally {
      credentials.release();
    }
  },
});
