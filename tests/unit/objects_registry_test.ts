/**
 * The object registry: secrets and authorization objects become live,
 * lookups answer with QEMU's messages, object-del releases what an object
 * holds and is refused while something uses the object.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ObjectRegistry } from "../../src/daemon/objects.ts";
import type { ObjectOptionsValue } from "../../src/daemon/qapi-types.ts";
import { tlsFixtures } from "../interop/tls_fixtures.ts";

const ALICE = "CN=alice,O=denbd test,C=GB";
const BOB = "CN=bob,O=denbd test,C=GB";

/** An object-add argument (checked by the QAPI schema elsewhere). */
function options(value: Record<string, unknown>): ObjectOptionsValue {
  return value as unknown as ObjectOptionsValue;
}

/** A registry where nothing is in use unless `users` says so. */
function registry(users: Record<string, string> = {}, warnings: string[] = []): ObjectRegistry {
  return new ObjectRegistry((id) => users[id] ?? null, (message) => warnings.push(message));
}

Deno.test("secrets are kept and read back as text, with QEMU's lookup messages", async () => {
  const objects = registry();
  await objects.add(
    options({ "qom-type": "secret", id: "s0", data: "c2VjcmV0", format: "base64" }),
  );
  await objects.add(options({ "qom-type": "secret", id: "s1", data: "pässword" }));
  await objects.add(options({ "qom-type": "secret", id: "bin", data: "/w==", format: "base64" }));
  await objects.add(options({ "qom-type": "iothread", id: "io0" }));
  assert.equal(objects.secret("s0"), "secret");
  assert.equal(objects.secret("s1"), "pässword");
  assert.throws(() => objects.secret("bin"), {
    message: "Data from secret bin is not valid UTF-8",
  });
  assert.throws(() => objects.secret("nope"), { message: "No secret with id 'nope'" });
  assert.throws(() => objects.secret("io0"), { message: "Object with id 'io0' is not a secret" });
  objects.delete("s0");
  assert.throws(() => objects.secret("s0"), { message: "No secret with id 's0'" });
});

Deno.test("a secret that fails to load is not created", async () => {
  const objects = registry();
  await assert.rejects(
    objects.add(options({ "qom-type": "secret", id: "s0", data: "a b", format: "base64" })),
    { message: "Base64 data contains invalid characters" },
  );
  assert.equal(objects.get("s0"), undefined);
  await objects.add(options({ "qom-type": "secret", id: "s0", data: "x" }));
  assert.equal(objects.secret("s0"), "x");
});

Deno.test("authorization objects decide; other objects and missing ids have no authorizer", async () => {
  const objects = registry();
  await objects.add(options({ "qom-type": "authz-simple", id: "a0", identity: ALICE }));
  await objects.add(options({
    "qom-type": "authz-list",
    id: "a1",
    policy: "allow",
    rules: [{ match: "CN=bob,*", policy: "deny", format: "glob" }],
  }));
  await objects.add(options({ "qom-type": "authz-list", id: "a2" }));
  await objects.add(options({ "qom-type": "secret", id: "s0", data: "x" }));
  const simple = objects.authorizer("a0");
  assert.ok(simple?.isAllowed(ALICE) && !simple.isAllowed(BOB));
  const list = objects.authorizer("a1");
  assert.ok(list?.isAllowed(ALICE) && !list.isAllowed(BOB));
  assert.equal(objects.authorizer("a2")?.isAllowed(ALICE), false);
  assert.equal(objects.authorizer("s0"), undefined);
  assert.equal(objects.authorizer("nope"), undefined);
  objects.delete("a0");
  assert.equal(objects.authorizer("a0"), undefined);
});

Deno.test("authorize: qsd's verdicts and the refusals it logs", async () => {
  const objects = registry();
  await objects.add(options({ "qom-type": "authz-simple", id: "a0", identity: ALICE }));
  await objects.add(options({ "qom-type": "secret", id: "s0", data: "x" }));
  assert.equal(objects.authorize("a0", ALICE), null);
  assert.equal(objects.authorize("a0", BOB), `TLS x509 authz check for ${BOB} is denied`);
  assert.equal(objects.authorize("nope", ALICE), "Cannot find QAuthZ object ID nope");
  assert.equal(objects.authorize("s0", ALICE), "Object 's0' is not a QAuthZ subclass");
});

Deno.test("authz-list-file objects follow their file until deleted", async () => {
  const dir = await Deno.makeTempDir({ prefix: "denbd-objects-" });
  const warnings: string[] = [];
  const objects = registry({}, warnings);
  try {
    const filename = join(dir, "list.json");
    const allowing = (identity: string) =>
      JSON.stringify({ rules: [{ match: identity, policy: "allow" }] });
    await Deno.writeTextFile(filename, allowing(ALICE));
    await objects.add(options({ "qom-type": "authz-list-file", id: "f0", filename }));
    await objects.add(options({
      "qom-type": "authz-list-file",
      id: "f1",
      filename,
      refresh: false,
    }));
    await assert.rejects(
      objects.add(options({ "qom-type": "authz-list-file", id: "f2", filename: "list.json" })),
      { message: /^Unable to read 'list.json': Failed to open file/ },
    );
    await Deno.writeTextFile(filename, "[");
    for (const deadline = Date.now() + 5000; objects.authorizer("f0")?.isAllowed(ALICE);) {
      assert.ok(Date.now() < deadline, "the change was not followed");
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.ok(objects.authorizer("f1")?.isAllowed(ALICE), "refresh=off keeps the first load");
    assert.match(warnings[0] ?? "", /^JSON parse error in '.*list.json'/);
    objects.delete("f0");
    objects.delete("f1");
  } finally {
    // The test's resource sanitizer fails if a watcher is left running.
    await objects.closeAll();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("object-del is refused while something uses the object", async () => {
  const objects = registry({ a0: "the NBD server" });
  await objects.add(options({ "qom-type": "authz-simple", id: "a0", identity: ALICE }));
  assert.throws(() => objects.delete("a0"), {
    message: "object 'a0' is in use by the NBD server",
  });
  assert.ok(objects.authorizer("a0")?.isAllowed(ALICE));
  assert.throws(() => objects.delete("nope"), { message: "object 'nope' not found" });
});

Deno.test("authz-listfile is qsd's invalid type; loaded is not writable", async () => {
  const objects = registry();
  await assert.rejects(
    objects.add(options({ "qom-type": "authz-listfile", id: "x", filename: "/x" })),
    { message: "invalid object type: authz-listfile" },
  );
  await assert.rejects(
    objects.add(options({ "qom-type": "secret", id: "x", data: "x", loaded: true })),
    { message: "Property 'secret.loaded' is not writable" },
  );
});

Deno.test("TLS credentials objects are loaded, looked up and released", async () => {
  const fixtures = await tlsFixtures();
  const objects = registry();
  await objects.add(options({
    "qom-type": "tls-creds-x509",
    id: "t0",
    dir: fixtures.server,
    endpoint: "server",
    "verify-peer": false,
  }));
  await objects.add(options({ "qom-type": "tls-creds-x509", id: "t1", dir: fixtures.client }));
  await objects.add(options({
    "qom-type": "tls-creds-psk",
    id: "t2",
    dir: fixtures.psk,
    endpoint: "client",
    username: fixtures.pskUser,
  }));
  await objects.add(options({ "qom-type": "tls-creds-anon", id: "t3", endpoint: "server" }));
  await objects.add(options({ "qom-type": "secret", id: "s0", data: "x" }));
  const server = objects.tlsCredentials("t0");
  assert.deepEqual([server.kind, server.endpoint, server.verifyPeer], ["x509", "server", false]);
  const client = objects.tlsCredentials("t1");
  assert.deepEqual([client.kind, client.endpoint, client.verifyPeer], ["x509", "client", true]);
  assert.deepEqual(
    [objects.tlsCredentials("t2").kind, objects.tlsCredentials("t2").endpoint],
    ["psk", "client"],
  );
  assert.equal(objects.tlsCredentials("t3").kind, "anon");
  assert.throws(() => objects.tlsCredentials("nope"), {
    message: "No TLS credentials with id 'nope'",
  });
  assert.throws(() => objects.tlsCredentials("s0"), {
    message: "Object with id 's0' is not TLS credentials",
  });
  // object-del and closeAll() release the credentials: no new session can take them.
  const anon = objects.tlsCredentials("t3");
  objects.delete("t3");
  assert.throws(() => objects.tlsCredentials("t3"), { message: "No TLS credentials with id 't3'" });
  const released = { message: "TLS credentials have been released" };
  assert.throws(() => anon.acquire(), released);
  server.acquire();
  server.relinquish();
  await objects.closeAll();
  assert.throws(() => objects.tlsCredentials("t0"), { message: "No TLS credentials with id 't0'" });
  assert.throws(() => server.acquire(), released);
});
