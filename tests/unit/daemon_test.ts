import assert from "node:assert/strict";
import { join } from "node:path";
import { Daemon } from "../../src/daemon/daemon.ts";
import { DAEMON_EVENTS } from "../../src/daemon/qapi-types.ts";
import { messageOf } from "../../src/errors.ts";
import type { QmpEvent } from "../../src/qmp/events.ts";
import { validateInput } from "../../src/qmp/input.ts";
import { JsonStreamParser } from "../../src/qmp/json-stream.ts";
import { formatJson } from "../../src/qmp/json-value.ts";
import { Logger } from "../../src/log.ts";
import { NbdClient } from "../../src/nbd/client/client.ts";

const MiB = 1024 * 1024;

/** Why `event`, as a monitor would send it, does not match its declared schema (null: it does). */
function schemaMismatch(event: QmpEvent): string | null {
  const declared = DAEMON_EVENTS.find((candidate) => candidate.name === event.name);
  if (!declared) return `${event.name}: not declared`;
  const [sent] = new JsonStreamParser().feed(
    new TextEncoder().encode(formatJson(event.data) + "\n"),
  );
  try {
    assert.ok(sent && "value" in sent);
    validateInput(declared.data, sent.value);
    return null;
  } catch (error) {
    return `${event.name}: ${messageOf(error)}`;
  }
}

/**
 * A daemon with a 4 MiB file node "f0" and an NBD server on a Unix socket;
 * events recorded, and each checked against its schema.
 */
async function withDaemon(
  body: (
    daemon: Daemon,
    context: { dir: string; socket: string; events: QmpEvent[] },
  ) => void | Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "denbd-daemon-" });
  const daemon = new Daemon(new Logger({ prefix: "test" }));
  const events: QmpEvent[] = [];
  const mismatches: string[] = [];
  const unsubscribe = daemon.events.subscribe((event) => {
    events.push(event);
    const mismatch = schemaMismatch(event);
    if (mismatch) mismatches.push(mismatch);
  });
  try {
    const image = join(dir, "d.img");
    await Deno.writeFile(image, new Uint8Array(4 * MiB));
    await daemon.blockdevAdd({ driver: "file", "node-name": "f0", filename: image });
    const socket = join(dir, "nbd.sock");
    await body(daemon, { dir, socket, events });
  } finally {
    unsubscribe();
    await daemon.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
  assert.deepEqual(mismatches, [], "events that do not match their schema");
}

function startServer(daemon: Daemon, socket: string, maxConnections?: number): void {
  daemon.nbdServerStart({
    addr: { type: "unix", path: socket },
    ...(maxConnections === undefined ? {} : { "max-connections": maxConnections }),
  });
}

Deno.test("blockdev-add: node names are required, well formed and unique; raw needs its file", async () => {
  await withDaemon(async (daemon, { dir }) => {
    const filename = join(dir, "d.img");
    await assert.rejects(
      daemon.blockdevAdd({ driver: "file", filename }),
      /^DenbdError: 'node-name' must be specified for the root node$/,
    );
    await assert.rejects(
      daemon.blockdevAdd({ driver: "file", "node-name": "1bad", filename }),
      /Invalid node-name: '1bad'/,
    );
    await assert.rejects(
      daemon.blockdevAdd({ driver: "file", "node-name": "f0", filename }),
      /Duplicate nodes with node-name='f0'/,
    );
    await assert.rejects(
      daemon.blockdevAdd({ driver: "raw", "node-name": "r0", file: "nonode" }),
      /Cannot find device='nonode' nor node-name='nonode'/,
    );
    await assert.rejects(
      daemon.blockdevAdd({ driver: "file", "node-name": "x", filename: join(dir, "missing") }),
      /Could not open/,
    );
  });
});

Deno.test("blockdev-add: a raw node over a named file or an inline one; blockdev-del rules", async () => {
  await withDaemon(async (daemon, { dir }) => {
    await daemon.blockdevAdd({ driver: "raw", "node-name": "r0", file: "f0" });
    await daemon.blockdevAdd({
      driver: "raw",
      "node-name": "r1",
      file: { driver: "file", filename: join(dir, "d.img"), "read-only": true },
      offset: 4096,
      size: 8192,
    });
    const names = (await daemon.queryNamedBlockNodes()).map((node) => node["node-name"]);
    assert.equal(names.length, 4);
    assert.deepEqual(names.filter((name) => !String(name).startsWith("#block")), [
      "r1",
      "r0",
      "f0",
    ]);
    const r1 = (await daemon.queryNamedBlockNodes()).find((node) => node["node-name"] === "r1")!;
    assert.equal((r1.image as Record<string, unknown>)["virtual-size"], 8192);
    assert.equal(r1.drv, "raw");

    await assert.rejects(daemon.blockdevDel("f0"), /^DenbdError: Block device f0 is in use$/);
    await assert.rejects(daemon.blockdevDel("nope"), /Failed to find node with node-name='nope'/);
    const generated = String(names.find((name) => String(name).startsWith("#block")));
    await assert.rejects(daemon.blockdevDel(generated), /Failed to find node/);

    startServerFor(daemon, dir);
    daemon.blockExportAdd({ type: "nbd", id: "e0", "node-name": "r0" });
    await assert.rejects(daemon.blockdevDel("r0"), /^DenbdError: Node r0 is in use$/);
    daemon.blockExportDel("e0");
    await daemon.blockdevDel("r0");
    await daemon.blockdevDel("r1");
    await daemon.blockdevDel("f0");
    assert.deepEqual(await daemon.queryNamedBlockNodes(), [], "the inline child went with r1");
  });
});

function startServerFor(daemon: Daemon, dir: string): void {
  startServer(daemon, join(dir, "nbd.sock"));
}

Deno.test("block-export-add: QEMU's checks and messages", async () => {
  await withDaemon(async (daemon, { dir, socket }) => {
    const add = (options: Record<string, unknown>) => () =>
      daemon.blockExportAdd({ type: "nbd", id: "e0", "node-name": "f0", ...options });
    assert.throws(add({}), /^DenbdError: NBD server not running$/);
    startServer(daemon, socket);
    assert.throws(add({ id: "1bad" }), /Invalid block export id/);
    assert.throws(add({ "node-name": "nonode" }), /Cannot find device='' nor node-name='nonode'/);
    assert.throws(add({ iothread: "io0" }), /iothread "io0" not found/);
    assert.throws(add({ name: "n".repeat(4097) }), /export name 'n+' too long/);
    assert.throws(add({ description: "é".repeat(2049) }), /description 'é+' too long/);
    assert.throws(add({ type: "vhost-user-blk" }), /vhost-user-blk exports are not supported/);
    add({})();
    assert.throws(add({}), /Block export id 'e0' is already in use/);
    assert.throws(add({ id: "e1" }), /NBD server already has export named 'f0'/);
    await daemon.blockdevAdd({
      driver: "file",
      "node-name": "ro",
      filename: join(dir, "d.img"),
      "read-only": true,
    });
    assert.throws(
      add({ id: "e2", "node-name": "ro", writable: true }),
      /Cannot export read-only node as writable/,
    );
    daemon.nbdServerAdd({ device: "ro", writable: true });
    assert.deepEqual(daemon.queryBlockExports(), [
      { id: "ro", type: "nbd", "node-name": "ro", "shutting-down": false },
      { id: "e0", type: "nbd", "node-name": "f0", "shutting-down": false },
    ]);
    assert.throws(
      () => daemon.nbdServerAdd({ device: "nope" }),
      /Cannot find device='nope' nor node-name='nope'/,
    );
  });
});

/** The next event the daemon emits. */
function nextEvent(daemon: Daemon): Promise<QmpEvent> {
  return new Promise((resolve) => {
    const unsubscribe = daemon.events.subscribe((event) => {
      unsubscribe();
      resolve(event);
    });
  });
}

Deno.test("block-export-del: without clients the export is deleted before it returns", async () => {
  await withDaemon((daemon, { socket, events }) => {
    startServer(daemon, socket);
    daemon.blockExportAdd({ type: "nbd", id: "e0", "node-name": "f0" });
    daemon.blockExportDel("e0");
    assert.deepEqual(events.map((event) => [event.name, event.data]), [
      ["BLOCK_EXPORT_DELETED", { id: "e0" }],
    ]);
    assert.deepEqual(daemon.queryBlockExports(), []);
    assert.throws(() => daemon.blockExportDel("nope"), /Export 'nope' is not found/);
  });
});

Deno.test("block-export-del: safe refuses while a client is connected; hard drops it, then the export goes", async () => {
  await withDaemon(async (daemon, { socket, events }) => {
    startServer(daemon, socket);
    daemon.blockExportAdd({
      type: "nbd",
      id: "e0",
      "node-name": "f0",
      name: "disk",
      writable: true,
    });
    const client = await NbdClient.connect(`nbd+unix:///disk?socket=${socket}`, {
      timeoutMs: 5000,
    });
    try {
      assert.throws(() => daemon.blockExportDel("e0"), /^DenbdError: export 'e0' still in use$/);
      assert.throws(() => daemon.nbdServerRemove("e0", "safe"), /export 'e0' still in use/);
      const deleted = nextEvent(daemon);
      daemon.blockExportDel("e0", "hard");
      // Returned before the client is gone: shutting down, the id taken, the name free.
      assert.equal(events.length, 0);
      assert.deepEqual(daemon.queryBlockExports(), [
        { id: "e0", type: "nbd", "node-name": "f0", "shutting-down": true },
      ]);
      for (const mode of ["safe", "hard"] as const) {
        assert.throws(
          () => daemon.blockExportDel("e0", mode),
          /^DenbdError: Export 'e0' is already shutting down$/,
        );
      }
      assert.throws(
        () => daemon.blockExportAdd({ type: "nbd", id: "e0", "node-name": "f0" }),
        /Block export id 'e0' is already in use/,
      );
      daemon.blockExportAdd({ type: "nbd", id: "e1", "node-name": "f0", name: "disk" });
      await assert.rejects(daemon.blockdevDel("f0"), /Node f0 is in use/);
      assert.deepEqual((await deleted).data, { id: "e0" });
      assert.deepEqual(daemon.queryBlockExports(), [
        { id: "e1", type: "nbd", "node-name": "f0", "shutting-down": false },
      ]);
      await assert.rejects(client.read(0, 512), { kind: "io" });
    } finally {
      await client.disconnect();
    }
    daemon.blockExportAdd({ type: "nbd", id: "e0", "node-name": "f0", name: "again" });
  });
});

Deno.test("nbd-server-stop waits for exports shutting down; the server counts as stopped meanwhile", async () => {
  await withDaemon(async (daemon, { socket, events }) => {
    startServer(daemon, socket);
    daemon.blockExportAdd({ type: "nbd", id: "e0", "node-name": "f0" });
    daemon.blockExportAdd({ type: "nbd", id: "e1", "node-name": "f0", name: "other" });
    const client = await NbdClient.connect(`nbd+unix:///f0?socket=${socket}`, {
      timeoutMs: 5000,
    });
    try {
      const stopped = daemon.nbdServerStop();
      // e1 has no client and went at once; e0 goes when its client has.
      assert.deepEqual(events.map((event) => event.data.id), ["e1"]);
      assert.throws(
        () => daemon.blockExportAdd({ type: "nbd", id: "e2", "node-name": "f0" }),
        /NBD server not running/,
      );
      await assert.rejects(daemon.nbdServerStop(), /NBD server not running/);
      assert.throws(() => startServer(daemon, socket), /NBD server already running/);
      await stopped;
      assert.deepEqual(events.map((event) => event.data.id), ["e1", "e0"]);
      assert.deepEqual(daemon.queryBlockExports(), []);
    } finally {
      await client.disconnect();
    }
    startServer(daemon, socket);
  });
});

Deno.test("nbd-server-stop deletes every export (an event each) and removes the socket", async () => {
  await withDaemon(async (daemon, { socket, events }) => {
    await assert.rejects(daemon.nbdServerStop(), /NBD server not running/);
    startServer(daemon, socket);
    assert.throws(() => startServer(daemon, socket), /NBD server already running/);
    daemon.blockExportAdd({ type: "nbd", id: "e0", "node-name": "f0" });
    daemon.blockExportAdd({ type: "nbd", id: "e1", "node-name": "f0", name: "other" });
    await daemon.nbdServerStop();
    assert.deepEqual(events.map((event) => event.data.id), ["e0", "e1"]);
    assert.deepEqual(daemon.queryBlockExports(), []);
    await assert.rejects(Deno.stat(socket), Deno.errors.NotFound);
  });
});

Deno.test("nbd-server-start: QEMU's address and TLS errors; server credentials start it", async () => {
  await withDaemon(async (daemon, { dir, socket }) => {
    const start = (options: Record<string, unknown>) => () =>
      daemon.nbdServerStart({ addr: { type: "unix", path: socket }, ...options });
    assert.throws(
      () => daemon.nbdServerStart({ addr: { type: "inet", host: "127.0.0.1", port: "notaport" } }),
      /address resolution failed for 127.0.0.1:notaport: Servname not supported for ai_socktype/,
    );
    assert.throws(
      () => daemon.nbdServerStart({ addr: { type: "unix", path: join(dir, "no", "x.sock") } }),
      /^DenbdError: Failed to bind socket to .*\/no\/x.sock: No such file or directory$/,
    );
    assert.throws(start({ "tls-creds": "nope" }), /No TLS credentials with id 'nope'/);
    await daemon.objectAdd({ "qom-type": "iothread", id: "io0" });
    assert.throws(start({ "tls-creds": "io0" }), /Object with id 'io0' is not TLS credentials/);
    await daemon.objectAdd({ "qom-type": "tls-creds-anon", id: "tc", endpoint: "client" });
    assert.throws(start({ "tls-creds": "tc" }), /Expected TLS credentials for a server endpoint/);
    // qsd takes tls-authz without tls-creds (and then checks nothing).
    start({ "tls-authz": "nobody-checks-this" })();
    await daemon.nbdServerStop();
    await daemon.objectAdd({ "qom-type": "tls-creds-anon", id: "t0", endpoint: "server" });
    await daemon.objectAdd({ "qom-type": "authz-simple", id: "a0", identity: "CN=x" });
    start({ "tls-creds": "t0", "tls-authz": "a0" })();
    // Both objects may go while the server uses them (as qsd): it holds its credentials.
    const credentials = daemon.objects.tlsCredentials("t0");
    daemon.objectDel("t0");
    daemon.objectDel("a0");
    credentials.acquire(); // still held by the running server
    credentials.relinquish();
    await daemon.nbdServerStop();
    assert.throws(() => credentials.acquire(), /TLS credentials have been released/);
  });
});

Deno.test("objects: ids, duplicates, TLS files, and no deletion while in use", async () => {
  await withDaemon(async (daemon, { dir, socket }) => {
    await assert.rejects(
      daemon.objectAdd({ "qom-type": "iothread", id: "1x" }),
      /Parameter 'id' expects an identifier/,
    );
    await daemon.objectAdd({ "qom-type": "iothread", id: "io0" });
    await assert.rejects(
      daemon.objectAdd({ "qom-type": "iothread", id: "io0" }),
      /attempt to add duplicate property 'io0' to object \(type 'container'\)/,
    );
    await assert.rejects(
      daemon.objectAdd({ "qom-type": "iothread", id: "io1", "poll-max-ns": -1 }),
      /poll-max-ns value must be in range \[0, 9223372036854775807\]/,
    );
    await assert.rejects(
      daemon.objectAdd({
        "qom-type": "tls-creds-x509",
        id: "t0",
        dir: join(dir, "pki"),
        endpoint: "server",
      }),
      new RegExp(`Unable to access credentials ${dir}/pki/ca-cert.pem: No such file or directory`),
    );
    startServer(daemon, socket);
    daemon.blockExportAdd({ type: "nbd", id: "e0", "node-name": "f0", iothread: "io0" });
    assert.throws(() => daemon.objectDel("io0"), /object 'io0' is in use by export 'e0'/);
    assert.throws(() => daemon.objectDel("nope"), /object 'nope' not found/);
    daemon.blockExportDel("e0");
    daemon.objectDel("io0");
  });
});

Deno.test("objects: QEMU's types not in qsd, types denbd lacks, secrets and credential dirs", async () => {
  await withDaemon(async (daemon, { dir }) => {
    const add = (options: Record<string, unknown>) =>
      daemon.objectAdd({ id: "o", ...options } as Parameters<Daemon["objectAdd"]>[0]);
    await assert.rejects(add({ "qom-type": "memory-backend-ram", size: 1 }), {
      message: "invalid object type: memory-backend-ram",
    });
    await assert.rejects(add({ "qom-type": "throttle-group" }), {
      message: "object type 'throttle-group' is not supported by denbd yet",
    });
    await assert.rejects(add({ "qom-type": "secret" }), {
      message: "Either 'file' or 'data' must be provided",
    });
    await assert.rejects(add({ "qom-type": "secret", data: "x", file: "/x" }), {
      message: "'file' and 'data' are mutually exclusive",
    });
    await assert.rejects(add({ "qom-type": "secret", file: dir }), {
      message: `Unable to read ${dir}: Error reading file \u201c${dir}\u201d: Is a directory`,
    });
    await assert.rejects(add({ "qom-type": "secret", file: `${dir}/none` }), {
      message: `Unable to read ${dir}/none: Failed to open file \u201c${dir}/none\u201d: ` +
        "No such file or directory",
    });
    await assert.rejects(add({ "qom-type": "secret", data: "x", loaded: true }), {
      message: "Property 'secret.loaded' is not writable",
    });
    await assert.rejects(add({ "qom-type": "tls-creds-psk", endpoint: "server" }), {
      message: "Missing 'dir' property value",
    });
    await assert.rejects(
      add({ "qom-type": "tls-creds-psk", endpoint: "server", username: "x", dir: "/none" }),
      { message: "username should not be set when endpoint=server" },
    );
    await Deno.writeTextFile(join(dir, "keys.psk"), "alice:00112233\nbob:0011\n");
    await assert.rejects(add({ "qom-type": "tls-creds-psk", dir }), {
      message: `Username qemu not found in PSK file ${dir}/keys.psk`,
    });
    await assert.rejects(add({ "qom-type": "tls-creds-psk", dir, username: "bob" }), {
      message: "Cannot set PSK client credentials: The request is invalid.",
    });
    await add({ "qom-type": "tls-creds-psk", dir, username: "alice" });
    daemon.objectDel("o");
    await add({ "qom-type": "tls-creds-anon" });
    await daemon.objectAdd({ "qom-type": "secret", id: "s0", data: "x" });
  });
});

Deno.test("a command that fails leaves the daemon as it was", async () => {
  await withDaemon(async (daemon, { dir, socket }) => {
    const nodesBefore = await daemon.queryNamedBlockNodes();
    // A raw window that does not fit: its inline file node is closed again.
    await assert.rejects(
      daemon.blockdevAdd({
        driver: "raw",
        "node-name": "r0",
        file: { driver: "file", filename: join(dir, "d.img") },
        offset: 8 * MiB,
      }),
    );
    assert.deepEqual(await daemon.queryNamedBlockNodes(), nodesBefore);
    // A server that cannot bind is not running; a later start works.
    assert.throws(() => startServer(daemon, join(dir, "no", "such", "dir.sock")));
    assert.throws(
      () => daemon.blockExportAdd({ type: "nbd", id: "e0", "node-name": "f0" }),
      /NBD server not running/,
    );
    startServer(daemon, socket);
    // An export with a missing bitmap is not created, and its id and name stay free.
    assert.throws(
      () => daemon.blockExportAdd({ type: "nbd", id: "e0", "node-name": "f0", bitmaps: ["nope"] }),
      /Bitmap 'nope' is not found/,
    );
    assert.deepEqual(daemon.queryBlockExports(), []);
    daemon.blockExportAdd({ type: "nbd", id: "e0", "node-name": "f0" });
    assert.equal(daemon.queryBlockExports().length, 1);
  });
});
