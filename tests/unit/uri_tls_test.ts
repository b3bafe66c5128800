/**
 * The TLS settings of NBD URIs, as libnbd reads them (user@ for the PSK
 * username, tls-certificates, tls-psk-file) and as the NBD URI standard adds
 * (tls-hostname, tls-verify-peer): a table of good URIs and what they say,
 * bad values with a clear message, the TLS mode each URI gives, the name the
 * server certificate must match, and formatNbdUri round trips.
 */

import assert from "node:assert/strict";
import { DenbdError } from "../../src/errors.ts";
import {
  defaultTlsUsername,
  TLS_MODES,
  tlsHostnameOf,
  tlsModeOf,
} from "../../src/nbd/client/tls.ts";
import { formatNbdUri, parseNbdUri, type UriTlsSettings } from "../../src/nbd/client/uri.ts";

/** URIs and the TLS settings they give (undefined: none). */
const SETTINGS: [string, UriTlsSettings | undefined][] = [
  ["nbds://h/", undefined],
  ["nbds://alice@h/e", { username: "alice" }],
  ["nbds://b%40ob@h/e", { username: "b@ob" }],
  ["nbds://h/e?tls-certificates=/etc/pki/x", { certificates: "/etc/pki/x" }],
  ["nbds://h/e?tls-certificates=certs%20dir", { certificates: "certs dir" }],
  ["nbds://alice@h/e?tls-psk-file=/k.psk", { username: "alice", pskFile: "/k.psk" }],
  [
    // libnbd's own example: a userinfo with no host, over a Unix socket.
    "nbds+unix://alice@/?socket=/tmp/nbd.sock&tls-certificates=certs",
    { username: "alice", certificates: "certs" },
  ],
  ["nbds+unix:///?socket=s&tls-hostname=server.example", { hostname: "server.example" }],
  ["nbds://h/?tls-verify-peer=0", { verifyPeer: false }],
  ["nbds://h/?tls-verify-peer=1", { verifyPeer: true }],
  ["nbds://h/?tls-verify-peer=false", { verifyPeer: false }],
  ["nbds://h/?tls-verify-peer=TRUE", { verifyPeer: true }],
  ["nbds://h/?tls-verify-peer=off", { verifyPeer: false }],
  // Other parameters (the URI standard's tls-type among them) are ignored, as libnbd does.
  ["nbds://h/?tls-type=psk&x-debug=1", undefined],
  // The first of repeated parameters counts, as for socket.
  ["nbds://h/?tls-certificates=a&tls-certificates=b", { certificates: "a" }],
  // Settings on a plain URI are read (libnbd reads them too) but do not ask for TLS.
  ["nbd://h/?tls-certificates=/c", { certificates: "/c" }],
];

Deno.test("uri tls: the settings of each URI", () => {
  for (const [text, settings] of SETTINGS) {
    assert.deepEqual(parseNbdUri(text).tlsSettings, settings, text);
  }
});

Deno.test("uri tls: the userinfo leaves the address and export name alone", () => {
  assert.deepEqual(parseNbdUri("nbds://alice@[::1]:99/e").address, {
    type: "inet",
    host: "::1",
    port: 99,
  });
  assert.equal(parseNbdUri("nbds://alice@h/e%20f").exportName, "e f");
  assert.deepEqual(parseNbdUri("nbds+unix://alice@/d?socket=/s").address, {
    type: "unix",
    path: "/s",
  });
  assert.equal(parseNbdUri("nbds+unix://alice@/d?socket=/s").exportName, "d");
});

Deno.test("uri tls: bad values are invalid, naming the parameter and what it takes", () => {
  const cases: [string, RegExp][] = [
    [
      "nbds://h/?tls-verify-peer=maybe",
      /tls-verify-peer: 'maybe' is not a boolean \(expected 0, 1, true, /,
    ],
    ["nbds://h/?tls-verify-peer=", /tls-verify-peer: '' is not a boolean/],
    ["nbds://h/?tls-verify-peer", /tls-verify-peer: '' is not a boolean/],
    ["nbds://h/?tls-certificates=", /tls-certificates needs a value/],
    ["nbds://h/?tls-psk-file=", /tls-psk-file needs a value/],
    ["nbds://h/?tls-hostname=", /tls-hostname needs a value/],
    ["nbds://a%zz@h/", /malformed percent-encoding/],
  ];
  for (const [text, message] of cases) {
    assert.throws(() => parseNbdUri(text), (error: unknown) => {
      assert.ok(error instanceof DenbdError, `${text}: not a DenbdError: ${error}`);
      assert.equal(error.kind, "invalid", text);
      assert.match(error.message, message, text);
      return true;
    });
  }
});

Deno.test("uri tls: nbds requires TLS; nbd stays plain unless the caller allows or requires it", () => {
  const cases: [string, (keyof typeof TLS_MODES) | undefined, string][] = [
    ["nbds://h/", undefined, "require"],
    ["nbds+unix:///?socket=s", undefined, "require"],
    ["nbds://h/", "allow", "require"],
    ["nbds://h/", "disable", "require"],
    ["nbd://h/", undefined, "disable"],
    ["nbd://h/?tls-certificates=/c", undefined, "disable"],
    ["nbd://h/", "allow", "allow"],
    ["nbd+unix:///?socket=s", "require", "require"],
  ];
  for (const [text, requested, mode] of cases) {
    assert.equal(tlsModeOf(parseNbdUri(text), requested), mode, `${text} ${requested}`);
  }
  assert.deepEqual(Object.keys(TLS_MODES), ["disable", "allow", "require"]);
});

Deno.test("uri tls: the server certificate must match tls-hostname, else the URI's host", () => {
  assert.equal(tlsHostnameOf(parseNbdUri("nbds://127.0.0.1/")), "127.0.0.1");
  assert.equal(tlsHostnameOf(parseNbdUri("nbds://[::1]:5/")), "::1");
  assert.equal(tlsHostnameOf(parseNbdUri("nbds://h/?tls-hostname=other")), "other");
  assert.equal(tlsHostnameOf(parseNbdUri("nbds+unix:///?socket=s")), undefined);
  assert.equal(tlsHostnameOf(parseNbdUri("nbds+unix:///?socket=s&tls-hostname=n")), "n");
});

Deno.test("uri tls: the default PSK username is $LOGNAME, as libnbd's", () => {
  const saved = Deno.env.get("LOGNAME");
  try {
    Deno.env.set("LOGNAME", "zed");
    assert.equal(defaultTlsUsername(), "zed");
    Deno.env.delete("LOGNAME");
    assert.ok(defaultTlsUsername().length > 0);
  } finally {
    if (saved === undefined) Deno.env.delete("LOGNAME");
    else Deno.env.set("LOGNAME", saved);
  }
});

Deno.test("uri tls: formatNbdUri keeps the settings, and parseNbdUri reads them back", () => {
  for (const [text] of SETTINGS.slice(0, -3)) {
    const parsed = parseNbdUri(text);
    assert.deepEqual(parseNbdUri(formatNbdUri(parsed)), parsed, text);
  }
  assert.equal(
    formatNbdUri(parseNbdUri("nbds://b%40ob@h/e?tls-psk-file=/k%20k&tls-verify-peer=no")),
    "nbds://b%40ob@h:10809/e?tls-psk-file=/k%20k&tls-verify-peer=0",
  );
  assert.equal(
    formatNbdUri(parseNbdUri("nbds+unix://a@/?socket=/s&tls-hostname=n")),
    "nbds+unix://a@/?socket=/s&tls-hostname=n",
  );
});
