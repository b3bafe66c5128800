/**
 * Connecting to a host name at each of its addresses in turn: the first
 * that answers wins, every failure is reported when none does.
 */
import assert from "node:assert/strict";
import { lookup } from "node:dns/promises";
import { dialTcp } from "../../src/net/dial.ts";
import { DenbdError } from "../../src/errors.ts";

const BOTH = () => Promise.resolve(["::1", "127.0.0.1"]);

/** Run `body` with a listener on `hostname` (port 0) and a port nothing listens on. */
async function withListener(
  hostname: string,
  body: (port: number, unused: number) => Promise<void>,
): Promise<void> {
  const listener = Deno.listen({ hostname, port: 0 });
  const spare = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const unused = spare.addr.port;
  spare.close();
  try {
    await body(listener.addr.port, unused);
  } finally {
    listener.close();
  }
}

/** The address `conn` reached; the connection is closed. */
function reached(conn: Deno.TcpConn): string {
  const address = conn.remoteAddr.hostname;
  conn.close();
  return address;
}

Deno.test("a name's addresses are tried in turn: ::1 only, then 127.0.0.1 only", async () => {
  await withListener("::1", async (port) => {
    assert.equal(reached(await dialTcp("both", port, { resolve: BOTH })), "::1");
  });
  await withListener("127.0.0.1", async (port) => {
    assert.equal(reached(await dialTcp("both", port, { resolve: BOTH })), "127.0.0.1");
  });
});

Deno.test("when no address answers, every failure is reported", async () => {
  await withListener("127.0.0.1", async (_, unused) => {
    await assert.rejects(
      dialTcp("both", unused, { resolve: BOTH }),
      (error: DenbdError) => {
        assert.ok(error instanceof DenbdError);
        assert.equal(error.kind, "io");
        assert.equal(
          error.message,
          "::1: Connection refused; 127.0.0.1: Connection refused",
        );
        return true;
      },
    );
    await assert.rejects(dialTcp("127.0.0.1", unused), /^DenbdError: Connection refused$/);
  });
});

Deno.test("an address literal is not resolved; a name that does not resolve is not-found", async () => {
  const never = () => Promise.reject(new Error("resolver called"));
  await withListener("::1", async (port) => {
    assert.equal(reached(await dialTcp("::1", port, { resolve: never })), "::1");
  });
  await assert.rejects(
    dialTcp("nowhere.invalid", 1, { resolve: () => Promise.reject(new Error("ENOTFOUND")) }),
    (error: DenbdError) =>
      error instanceof DenbdError && error.kind === "not-found" &&
      /cannot resolve 'nowhere.invalid'/.test(error.message),
  );
});

Deno.test("localhost through the system resolver (/etc/hosts) reaches each of its addresses", async () => {
  const addresses = (await lookup("localhost", { all: true })).map((entry) => entry.address);
  assert.ok(addresses.length > 0);
  for (const address of new Set(addresses)) {
    await withListener(address, async (port) => {
      assert.equal(reached(await dialTcp("localhost", port)), address);
    });
  }
});
