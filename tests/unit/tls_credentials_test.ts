/**
 * TlsCredentials: priority strings per kind, the CRL, encrypted keys, DH
 * parameters, the sanity-check switch and release while sessions live.
 * (Load errors are compared with qemu-nbd's in tests/interop/tls_engine_test.ts.)
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { writeAll } from "../../src/io/byte-stream.ts";
import { TlsCredentials } from "../../src/tls/credentials.ts";
import { tlsFixtures } from "../interop/tls_fixtures.ts";
import { closeAll, failure, handshakePair, readExactly, sessions, within } from "./tls_pair.ts";

/** The most any test here may take. */
const TEST_MS = 30_000;

const fixtures = await tlsFixtures();

Deno.test("priority: QEMU's default, with the PSK and anonymous additions", () =>
  within(TEST_MS, async () => {
    const x509 = await TlsCredentials.x509({ endpoint: "server", dir: fixtures.server });
    const psk = await TlsCredentials.psk({ endpoint: "server", keysFile: fixtures.pskFile });
    const anon = await TlsCredentials.anon({ endpoint: "client" });
    const custom = await TlsCredentials.anon({ endpoint: "server", priority: "SECURE256" });
    assert.equal(x509.priority, "NORMAL");
    assert.equal(psk.priority, "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK");
    assert.equal(anon.priority, "NORMAL:+ANON-DH");
    assert.equal(custom.priority, "SECURE256:+ANON-DH");
    assert.deepEqual(
      [x509, psk, anon].map((credentials) => [credentials.kind, credentials.verifyPeer]),
      [["x509", true], ["psk", false], ["anon", false]],
    );
    for (const credentials of [x509, psk, anon, custom]) credentials.release();
  }));

Deno.test("an invalid priority fails the handshake with QEMU's message", () =>
  within(TEST_MS, async () => {
    const server = await TlsCredentials.anon({ endpoint: "server", priority: "BOGUS" });
    const client = await TlsCredentials.anon({ endpoint: "client" });
    const outcome = await handshakePair(server, client);
    assert.match(
      failure(outcome.server),
      /^Unable to set TLS session priority BOGUS:\+ANON-DH: /,
    );
    await closeAll(outcome);
    const x509 = await TlsCredentials.x509({
      endpoint: "server",
      dir: fixtures.server,
      priority: "BOGUS",
    });
    const x509Client = await TlsCredentials.x509({ endpoint: "client", dir: fixtures.client });
    const refused = await handshakePair(x509, x509Client);
    assert.match(failure(refused.server), /^Cannot set default TLS session priority BOGUS: /);
    await closeAll(refused);
    for (const credentials of [server, client, x509, x509Client]) credentials.release();
  }));

Deno.test("ca-crl.pem: a revoked client certificate is refused, others pass", () =>
  within(TEST_MS, async () => {
    const server = await TlsCredentials.x509({ endpoint: "server", dir: fixtures.crlServer });
    const revoked = await TlsCredentials.x509({ endpoint: "client", dir: fixtures.revokedClient });
    const good = await TlsCredentials.x509({ endpoint: "client", dir: fixtures.client });
    const refused = await handshakePair(server, revoked);
    assert.equal(failure(refused.server), "The certificate has been revoked");
    await closeAll(refused);
    const accepted = await handshakePair(server, good);
    assert.equal(sessions(accepted).server.peer.identity, fixtures.clientDn);
    await closeAll(accepted);
    for (const credentials of [server, revoked, good]) credentials.release();
  }));

Deno.test("ca-crl.pem in a client directory: a revoked server certificate is refused", () =>
  within(TEST_MS, async () => {
    const revoked = await TlsCredentials.x509({ endpoint: "server", dir: fixtures.revokedServer });
    const good = await TlsCredentials.x509({ endpoint: "server", dir: fixtures.server });
    const client = await TlsCredentials.x509({ endpoint: "client", dir: fixtures.crlClient });
    const refused = await handshakePair(revoked, client, { hostname: "127.0.0.1" });
    assert.equal(failure(refused.client), "The certificate has been revoked");
    await closeAll(refused);
    const accepted = await handshakePair(good, client, { hostname: "127.0.0.1" });
    sessions(accepted);
    await closeAll(accepted);
    for (const credentials of [revoked, good, client]) credentials.release();
  }));

Deno.test("an encrypted server key needs its password", () =>
  within(TEST_MS, async () => {
    const dir = fixtures.encryptedKeyServer;
    await assert.rejects(
      TlsCredentials.x509({ endpoint: "server", dir }),
      new RegExp(
        `^DenbdError: Cannot load certificate '${dir}/server-cert.pem' & key '${dir}/server-key.pem': `,
      ),
    );
    await assert.rejects(
      TlsCredentials.x509({ endpoint: "server", dir, keyPassword: "wrong" }),
      /Cannot load certificate/,
    );
    const server = await TlsCredentials.x509({
      endpoint: "server",
      dir,
      keyPassword: fixtures.keyPassword,
    });
    const client = await TlsCredentials.x509({ endpoint: "client", dir: fixtures.client });
    const outcome = await handshakePair(server, client, { hostname: "localhost" });
    sessions(outcome);
    await closeAll(outcome);
    server.release();
    client.release();
  }));

Deno.test("DH parameters load for x509, PSK and anonymous servers; a bad file is refused", () =>
  within(TEST_MS, async () => {
    const withDh = join(fixtures.root, "server-with-dh");
    await Deno.mkdir(withDh, { recursive: true });
    for (const name of ["ca-cert.pem", "server-cert.pem", "server-key.pem"]) {
      await Deno.copyFile(join(fixtures.server, name), join(withDh, name));
    }
    await Deno.copyFile(fixtures.dhParamsFile, join(withDh, "dh-params.pem"));
    const x509 = await TlsCredentials.x509({ endpoint: "server", dir: withDh });
    const psk = await TlsCredentials.psk({
      endpoint: "server",
      keysFile: fixtures.pskFile,
      dhParamsFile: fixtures.dhParamsFile,
    });
    const anon = await TlsCredentials.anon({
      endpoint: "server",
      dhParamsFile: fixtures.dhParamsFile,
    });
    const anonClient = await TlsCredentials.anon({ endpoint: "client" });
    const outcome = await handshakePair(anon, anonClient);
    sessions(outcome);
    await closeAll(outcome);
    const bad = join(fixtures.root, "bad-dh.pem");
    await Deno.writeTextFile(bad, "not DH parameters\n");
    await assert.rejects(
      TlsCredentials.anon({ endpoint: "server", dhParamsFile: bad }),
      new RegExp(`^DenbdError: Unable to load DH parameters from ${bad}: `),
    );
    for (const credentials of [x509, psk, anon, anonClient]) credentials.release();
  }));

Deno.test("sanity-check off loads certificates QEMU's check refuses", () =>
  within(TEST_MS, async () => {
    await assert.rejects(
      TlsCredentials.x509({ endpoint: "server", dir: fixtures.expiredServer }),
      /has expired/,
    );
    const unchecked = await TlsCredentials.x509({
      endpoint: "server",
      dir: fixtures.expiredServer,
      sanityCheck: false,
    });
    unchecked.release();
  }));

Deno.test("release: usable while a reference is held (as QEMU's server keeps deleted credentials), freed after the last", () =>
  within(TEST_MS, async () => {
    const server = await TlsCredentials.x509({ endpoint: "server", dir: fixtures.server });
    const client = await TlsCredentials.x509({ endpoint: "client", dir: fixtures.client });
    const outcome = await handshakePair(server, client);
    const sides = sessions(outcome);
    server.release();
    server.release();
    await writeAll(sides.client, new Uint8Array([7, 7]));
    assert.deepEqual(await readExactly(sides.server, 2), new Uint8Array([7, 7]));
    const second = await handshakePair(server, client);
    await writeAll(sessions(second).server, new Uint8Array([8]));
    assert.deepEqual(await readExactly(sessions(second).client, 1), new Uint8Array([8]));
    await closeAll(second);
    await closeAll(outcome);
    const refused = await handshakePair(server, client);
    assert.equal(failure(refused.server), "TLS credentials have been released");
    await closeAll(refused);
    client.release();
  }));
