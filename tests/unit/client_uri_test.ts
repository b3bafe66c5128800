/**
 * NBD URIs: the examples of the NBD URI standard (doc/uri.md in
 * NetworkBlockDevice/nbd), ports, IPv6 literals, Unix sockets, the TLS
 * schemes, malformed URIs (kind "invalid" with a message that says why) and
 * formatNbdUri round trips.
 */

import assert from "node:assert/strict";
import { DenbdError } from "../../src/errors.ts";
import { NbdClient, withNegotiation } from "../../src/nbd/client/client.ts";
import {
  formatNbdUri,
  NBD_DEFAULT_PORT,
  type NbdUri,
  parseNbdUri,
} from "../../src/nbd/client/uri.ts";

function inet(host: string, port = NBD_DEFAULT_PORT) {
  return { type: "inet", host, port } as const;
}

/** parseNbdUri(text) throws kind "invalid" with a message matching `message`. */
function invalid(text: string, message: RegExp): void {
  assert.throws(() => parseNbdUri(text), (error: unknown) => {
    assert.ok(error instanceof DenbdError, `not a DenbdError: ${error}`);
    assert.equal(error.kind, "invalid");
    assert.match(error.message, message);
    return true;
  });
}

Deno.test("uri: the export name examples of doc/uri.md", () => {
  const examples: [string, string][] = [
    ["nbd://example.com/disk", "disk"],
    ["nbd+unix:///disk?socket=sock", "disk"],
    ["nbd://example.com/", ""],
    ["nbd://example.com", ""],
    ["nbd://example.com//disk", "/disk"],
    ["nbd://example.com/hello%20world", "hello world"],
  ];
  for (const [text, exportName] of examples) {
    assert.equal(parseNbdUri(text).exportName, exportName, text);
  }
});

Deno.test("uri: export names are percent-decoded as UTF-8, keeping inner slashes", () => {
  assert.equal(parseNbdUri("nbd://h/a%2Fb").exportName, "a/b");
  assert.equal(parseNbdUri("nbd://h/a/b").exportName, "a/b");
  assert.equal(parseNbdUri("nbd://h/caf%C3%A9").exportName, "café");
  assert.equal(parseNbdUri("nbd://h/café").exportName, "café");
  assert.equal(parseNbdUri("nbd://h/a+b").exportName, "a+b");
  assert.equal(parseNbdUri("nbd://h/100%25").exportName, "100%");
});

Deno.test("uri: TCP host and port, default 10809", () => {
  assert.deepEqual(parseNbdUri("nbd://example.com/disk"), {
    address: inet("example.com"),
    exportName: "disk",
    tls: false,
  });
  assert.deepEqual(parseNbdUri("nbd://example.com:10810/disk").address, inet("example.com", 10810));
  assert.deepEqual(parseNbdUri("nbd://127.0.0.1:1/").address, inet("127.0.0.1", 1));
  assert.deepEqual(parseNbdUri("nbd://127.0.0.1:65535").address, inet("127.0.0.1", 65535));
  // An empty port is no port.
  assert.deepEqual(parseNbdUri("nbd://example.com:/disk").address, inet("example.com"));
  assert.equal(NBD_DEFAULT_PORT, 10809);
});

Deno.test("uri: IPv6 literals lose their brackets", () => {
  assert.deepEqual(parseNbdUri("nbd://[::1]/disk").address, inet("::1"));
  assert.deepEqual(parseNbdUri("nbd://[::1]:10810/disk").address, inet("::1", 10810));
  assert.deepEqual(parseNbdUri("nbds://[2001:db8::7]:99/x").address, inet("2001:db8::7", 99));
});

Deno.test("uri: unknown query parameters and fragments are ignored", () => {
  for (const text of ["nbd://host/disk?x-option=1", "nbd://host/disk#f", "nbd://host/disk?tls"]) {
    assert.deepEqual(parseNbdUri(text), { address: inet("host"), exportName: "disk", tls: false });
  }
});

Deno.test("uri: nbd+unix takes the socket from the socket= parameter", () => {
  assert.deepEqual(parseNbdUri("nbd+unix:///disk?socket=/tmp/nbd.sock"), {
    address: { type: "unix", path: "/tmp/nbd.sock" },
    exportName: "disk",
    tls: false,
  });
  assert.deepEqual(parseNbdUri("nbd+unix:///?socket=sock").address, { type: "unix", path: "sock" });
  assert.equal(parseNbdUri("nbd+unix:///?socket=sock").exportName, "");
  assert.equal(parseNbdUri("nbd+unix://?socket=sock").exportName, "");
  // Percent-decoded, "+" kept (RFC 3986 query, not a form), other parameters beside it.
  assert.deepEqual(
    parseNbdUri("nbd+unix:///d?tls-type=x509&socket=/tmp/a%20dir/n+b.sock&x-y=1").address,
    { type: "unix", path: "/tmp/a dir/n+b.sock" },
  );
  // The abstract namespace form of doc/uri.md.
  assert.deepEqual(parseNbdUri("nbd+unix:///?socket=%00/abstract").address, {
    type: "unix",
    path: "\0/abstract",
  });
});

Deno.test("uri: nbd+unix without a socket is invalid", () => {
  invalid("nbd+unix:///disk", /needs a \?socket=PATH parameter/);
  invalid("nbd+unix:///disk?socket=", /needs a \?socket=PATH parameter/);
  invalid("nbd+unix:///disk?sock=/tmp/s", /needs a \?socket=PATH parameter/);
  invalid("nbds+unix:///disk", /needs a \?socket=PATH parameter/);
});

Deno.test("uri: a socket parameter on a TCP URI is invalid, not silently dropped", () => {
  invalid("nbd://localhost/disk?socket=/tmp/s", /socket parameter needs an nbd\+unix/);
  invalid("nbds:///disk?socket=/tmp/s", /./);
});

Deno.test("uri: nbds and nbds+unix ask for TLS", () => {
  assert.equal(parseNbdUri("nbd://h/").tls, false);
  assert.equal(parseNbdUri("nbds://h/").tls, true);
  assert.equal(parseNbdUri("nbd+unix:///?socket=s").tls, false);
  assert.equal(parseNbdUri("nbds+unix:///?socket=s").tls, true);
  assert.deepEqual(parseNbdUri("nbds://h:1/e"), {
    address: inet("h", 1),
    exportName: "e",
    tls: true,
  });
  // Schemes are case-insensitive (RFC 3986).
  assert.equal(parseNbdUri("NBDS://h/").tls, true);
});

Deno.test("uri: other schemes are invalid and the message lists the NBD ones", () => {
  for (const text of ["http://example.com/disk", "nbd+tcp://h/disk", "file:///disk", "unix:/s"]) {
    invalid(text, /unsupported URI scheme '.*:' \(expected nbd: nbds: nbd\+unix: nbds\+unix:\)/);
  }
});

Deno.test("uri: malformed URIs are invalid with a clear message", () => {
  invalid("", /is not a URI \(expected nbd:\/\/HOST\[:PORT\]\/EXPORT\)/);
  invalid("localhost:10809", /unsupported URI scheme 'localhost:'/);
  invalid("example.com/disk", /is not a URI \(expected nbd:\/\/HOST\[:PORT\]\/EXPORT\)$/);
  invalid(
    "/run/nbd.sock",
    /is not a URI .*; to open a local socket use "nbd\+unix:\/\/\/\?socket=\/run\/nbd\.sock"$/,
  );
  invalid("./nbd.sock", /use "nbd\+unix:\/\/\/\?socket=\.\/nbd\.sock"$/);
  invalid("nbd://host:99999/disk", /'nbd:\/\/host:99999\/disk' is not a URI/);
  invalid("nbd://host:port/disk", /is not a URI/);
  invalid("nbd://[::1/disk", /is not a URI/);
  invalid("nbd://", /names no host/);
  invalid("nbd:///disk", /names no host/);
  invalid("nbd:disk", /names no host/);
  invalid("nbd://host/%zz", /malformed percent-encoding/);
  invalid("nbd://host/%C3", /malformed percent-encoding/);
  invalid("nbd+unix:///?socket=%ZZ", /malformed percent-encoding/);
});

Deno.test("uri: formatNbdUri names the port and round-trips through parseNbdUri", () => {
  const cases: [NbdUri, string][] = [
    [
      { address: inet("example.com"), exportName: "disk", tls: false },
      "nbd://example.com:10809/disk",
    ],
    [{ address: inet("example.com", 1), exportName: "", tls: true }, "nbds://example.com:1/"],
    [{ address: inet("::1", 10810), exportName: "a b", tls: false }, "nbd://[::1]:10810/a%20b"],
    [{ address: inet("h"), exportName: "/disk", tls: false }, "nbd://h:10809//disk"],
    [{ address: inet("h"), exportName: "café?#%", tls: false }, "nbd://h:10809/caf%C3%A9%3F%23%25"],
    [
      { address: { type: "unix", path: "/tmp/n b+&.sock" }, exportName: "d", tls: false },
      "nbd+unix:///d?socket=/tmp/n%20b%2B%26.sock",
    ],
    [
      { address: { type: "unix", path: "s" }, exportName: "", tls: true },
      "nbds+unix:///?socket=s",
    ],
  ];
  for (const [uri, text] of cases) {
    assert.equal(formatNbdUri(uri), text);
    assert.deepEqual(parseNbdUri(text), uri, text);
  }
  for (
    const text of [
      "nbd://example.com/disk",
      "nbd://[::1]/x",
      "nbd+unix:///disk?socket=sock",
      "nbds://h:5/hello%20world",
    ]
  ) {
    const parsed = parseNbdUri(text);
    assert.deepEqual(parseNbdUri(formatNbdUri(parsed)), parsed, text);
  }
});

Deno.test("uri: the client refuses bad URIs before connecting", async () => {
  await assert.rejects(NbdClient.connect("http://x/"), /unsupported URI scheme/);
  await assert.rejects(
    withNegotiation("nbds://h/?tls-verify-peer=maybe", () => Promise.resolve()),
    /tls-verify-peer: 'maybe' is not a boolean/,
  );
});

Deno.test("uri: connecting where nothing listens is kind io, naming the address", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  const socket = await Deno.makeTempFile({ suffix: ".sock" });
  await Deno.remove(socket);
  for (
    const [text, where] of [[`nbd://127.0.0.1:${port}/`, `127.0.0.1:${port}`], [
      `nbd+unix:///?socket=${socket}`,
      socket,
    ]]
  ) {
    await assert.rejects(NbdClient.connect(text, { timeoutMs: 2000 }), (error: unknown) => {
      assert.ok(error instanceof DenbdError);
      assert.equal(error.kind, "io");
      assert.ok(error.message.includes(`could not connect to ${where}`), error.message);
      return true;
    });
  }
});
