import assert from "node:assert/strict";
import { libnbdUri } from "../../src/cli/libnbd-uri.ts";
import { parseNbdUri } from "../../src/nbd/client/uri.ts";

Deno.test("the port is always given, the host kept as written", () => {
  assert.equal(libnbdUri(parseNbdUri("nbd://localhost"), ""), "nbd://localhost:10809/");
  assert.equal(libnbdUri(parseNbdUri("nbd://127.0.0.1:20001/x"), "x"), "nbd://127.0.0.1:20001/x");
  assert.equal(libnbdUri(parseNbdUri("nbd://[::1]:5/"), "disk"), "nbd://[::1]:5/disk");
});

Deno.test("export names are escaped as libxml2 escapes a path (as nbdinfo prints them)", () => {
  const uri = parseNbdUri("nbd://127.0.0.1:20002/");
  // Both strings as nbdinfo 1.14.2 printed them for qemu-nbd exports of these names.
  assert.equal(libnbdUri(uri, "a b:c/d"), "nbd://127.0.0.1:20002/a%20b%3Ac/d");
  assert.equal(
    libnbdUri(uri, "x!*'()~-_.;@&=+$,?#%é[]"),
    "nbd://127.0.0.1:20002/x!*'()~-_.;@&=+$,%3F%23%25%C3%A9%5B%5D",
  );
});

Deno.test("Unix sockets: empty authority, the socket path as it is", () => {
  assert.equal(
    libnbdUri(parseNbdUri("nbd+unix:///disk?socket=/tmp/a%20b.sock"), "disk"),
    "nbd+unix:///disk?socket=/tmp/a b.sock",
  );
  assert.equal(libnbdUri(parseNbdUri("nbd+unix:///?socket=/s"), ""), "nbd+unix:///?socket=/s");
});

Deno.test("TLS: nbds when required or negotiated, user@, then tls-certificates and tls-psk-file", () => {
  // As nbdinfo 1.14.2 printed them for nbdkit and qemu-nbd over TLS.
  assert.equal(
    libnbdUri(parseNbdUri("nbds://127.0.0.1:20997/?tls-certificates=/tmp/fx/client"), ""),
    "nbds://127.0.0.1:20997/?tls-certificates=/tmp/fx/client",
  );
  assert.equal(
    libnbdUri(parseNbdUri("nbds://alice@127.0.0.1:5/d?tls-psk-file=/k.psk"), "d"),
    "nbds://alice@127.0.0.1:5/d?tls-psk-file=/k.psk",
  );
  assert.equal(
    libnbdUri(parseNbdUri("nbds+unix:///?socket=/s&tls-certificates=/c"), ""),
    "nbds+unix:///?socket=/s&tls-certificates=/c",
  );
  // tls-hostname and tls-verify-peer are not kept by libnbd 1.14, so not printed.
  assert.equal(
    libnbdUri(parseNbdUri("nbds://h:1/?tls-hostname=n&tls-verify-peer=0"), ""),
    "nbds://h:1/",
  );
  // A plain URI on which TLS was negotiated (the library's "allow" mode) prints as nbds.
  assert.equal(libnbdUri(parseNbdUri("nbd://h:1/"), "", true), "nbds://h:1/");
  assert.equal(libnbdUri(parseNbdUri("nbd://h:1/"), "", false), "nbd://h:1/");
});
